"""Where recommendations go, in the formats of the `OUTPUTS` registry: JSON lines (`ndjson.py`), Parquet
(`parquet.py`), OTTO's Kaggle CSV (`otto_csv.py`); a new format is one new module of this package.

A format is one writer class, `Writer(sink, id_type)` with `write(batch)` and `close()`, registered with its
name and file extensions. A text format writes to a text handle (stdout or a file); a format that needs a file
(`needs_file`, Parquet) gets the path. A file is written under a temporary name and renamed only when complete;
stdout gets the records from a temporary file once they are all written, so a failure writes nothing there either.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from tron_cli.artifacts.files import atomic_path
from tron_cli.errors import UsageError
from tron_cli.registry import Registry


@dataclass
class Recommended:
    """One batch's answer: session s gets raw ids ids[offsets[s]:offsets[s+1]] with those scores, best first.

    A `fallback` session had no known item and got the most popular items: its scores mean nothing and are
    written as null."""

    sessions: list | pa.Array
    where: list[str]
    offsets: np.ndarray
    ids: np.ndarray
    scores: np.ndarray  # float32
    fallback: np.ndarray  # bool (S,)
    # formats with `per_event_type`: (offsets, ids) of the lists answered for each OTTO event type, when they differ
    typed: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def session_values(self) -> list:
        return self.sessions.to_pylist() if isinstance(self.sessions, pa.Array) else self.sessions

    def id_lists(self) -> list[list]:
        return id_lists(self.offsets, self.ids)

    def arrow_lists(self, id_type: pa.DataType) -> tuple[pa.Array, pa.Array]:
        """(items, scores) as Arrow list arrays, one list per session: raw ids of `id_type`, float32 scores (null for a fallback)."""
        offsets = pa.array(self.offsets.astype(np.int32))
        items = pa.ListArray.from_arrays(offsets, pa.array(self.ids, type=id_type))
        scores = pa.ListArray.from_arrays(offsets, pa.array(self.scores, type=pa.float32()), mask=pa.array(self.fallback))
        return items, scores


def id_lists(offsets: np.ndarray, ids: np.ndarray) -> list[list]:
    flat, bounds = ids.tolist(), offsets.tolist()
    return [flat[a:b] for a, b in itertools.pairwise(bounds)]


class Writer(Protocol):
    def write(self, batch: Recommended) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class OutputFormat:
    name: str
    summary: str  # one line for --help and docs
    writer: type  # Writer(sink, id_type): sink is a text handle, or a Path with `needs_file`
    extensions: tuple[str, ...] = ()  # an --output with one of these suffixes picks this format
    needs_file: bool = False  # binary formats cannot go to stdout
    per_event_type: bool = False  # writes a list per OTTO event type (`Recommended.typed`) when the model has them


OUTPUTS: Registry[OutputFormat] = Registry("output format", package="tron_cli.outputs", first=("ndjson",))


def output_format(output_path: str, requested: str | None) -> OutputFormat:
    """--format, or by the output file's extension (a registered one), else JSON lines."""
    if requested is None:
        suffix = Path(output_path).suffix.lower() if output_path != "-" else ""
        requested = next((name for name, entry in OUTPUTS.items() if suffix and suffix in entry.extensions), "ndjson")
    chosen = OUTPUTS.get(requested, "--format")
    if chosen.needs_file and output_path == "-":
        raise UsageError(f"{chosen.name.capitalize()} output needs a file: --output FILE{chosen.extensions[0] if chosen.extensions else ''}, not stdout")
    return chosen


@contextlib.contextmanager
def open_writer(output_path: str, chosen: OutputFormat, id_type: pa.DataType) -> Iterator[Writer]:
    """A writer for the output; a file is written under a temporary name and renamed only when complete."""
    if output_path == "-":
        # spooled, and copied to stdout only when complete: a failure (a malformed line) leaves stdout empty
        with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as spool:
            writer = chosen.writer(spool, id_type)
            yield writer
            writer.close()
            spool.seek(0)
            shutil.copyfileobj(spool, sys.stdout)
            sys.stdout.flush()
        return
    with atomic_path(Path(output_path)) as tmp:
        if chosen.needs_file:
            writer = chosen.writer(tmp, id_type)
            try:
                yield writer
            finally:
                writer.close()  # on a failure too: the file is closed before its temporary name is removed
            return
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = chosen.writer(handle, id_type)
            yield writer
            writer.close()
