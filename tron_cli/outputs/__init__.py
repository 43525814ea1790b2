"""Where recommendations go, in the formats of the `OUTPUTS` registry: JSON lines, Parquet, OTTO's Kaggle CSV.

A format is one writer class, `Writer(sink, id_type)` with `write(batch)` and `close()`, registered with its
name and file extensions. A text format writes to a text handle (stdout or a file); a format that needs a file
(`needs_file`, Parquet) gets the path. A file is written under a temporary name and renamed only when complete;
stdout gets the records from a temporary file once they are all written, so a failure writes nothing there either.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tron_cli.artifacts.files import atomic_path
from tron_cli.errors import InputFormatError, UsageError
from tron_cli.inference.session_input import INT64_RANGE
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
        return _lists(self.offsets, self.ids)


def _lists(offsets: np.ndarray, ids: np.ndarray) -> list[list]:
    flat, bounds = ids.tolist(), offsets.tolist()
    return [flat[a:b] for a, b in itertools.pairwise(bounds)]


def _json_number(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else "null"


class JsonLines:
    """One line per session: {"session": ..., "items": [...], "scores": [...]}, scores to 6 significant digits."""

    def __init__(self, handle, id_type: pa.DataType):
        self.handle = handle

    def write(self, batch: Recommended) -> None:
        # formatted by hand, not json.dumps of a dict: several times faster, which matters once scoring is
        # fast (a GPU); "{:.6g}" of a finite float is a valid JSON number
        scores, offsets = batch.scores.tolist(), batch.offsets.tolist()
        # JSON has no NaN or infinity: a score that overflowed is written as null (checked once per batch: rare)
        number = "{:.6g}".format if np.isfinite(batch.scores).all() else _json_number
        lines = []
        for s, (session, ids) in enumerate(zip(batch.session_values(), batch.id_lists())):
            listed = "null" if batch.fallback[s] else "[" + ", ".join(map(number, scores[offsets[s] : offsets[s + 1]])) + "]"
            lines.append(f'{{"session": {json.dumps(session, default=str)}, "items": {json.dumps(ids)}, "scores": {listed}}}\n')
        self.handle.write("".join(lines))
        self.handle.flush()

    def close(self) -> None:
        pass


class SubmissionCsv:
    """OTTO's Kaggle submission: `session_type,labels`, then <session>_clicks, _carts and _orders. A MultiTRON
    model answers each type at its own order weight (`choices.KAGGLE_ORDER_WEIGHTS`: clicks 0, carts 0.5,
    orders 1); any other model's single list (the next click) fills all three rows."""

    TYPES = ("clicks", "carts", "orders")

    def __init__(self, handle, id_type: pa.DataType):
        self.handle = handle
        self.writer = csv.writer(handle, lineterminator="\n")
        self.writer.writerow(["session_type", "labels"])

    def write(self, batch: Recommended) -> None:
        rows = []
        lists = {kind: _lists(*batch.typed[kind]) if batch.typed else batch.id_lists() for kind in self.TYPES}
        for s, session in enumerate(batch.session_values()):
            name = session if isinstance(session, str) else json.dumps(session, default=str)
            rows += [[f"{name}_{kind}", " ".join(map(str, lists[kind][s]))] for kind in self.TYPES]
        self.writer.writerows(rows)
        self.handle.flush()

    def close(self) -> None:
        pass


class ParquetOutput:
    """Columns session (as given), items (list of raw ids), scores (list<float32>, null for a popular fallback).

    The session column's type comes from the first batch: the input's Parquet type, else int64 when every
    session id is a JSON integer, else string (strings as they are, other JSON values as JSON text).
    """

    def __init__(self, path: Path, id_type: pa.DataType):
        self.path = path
        self.id_type = id_type
        self.writer: pq.ParquetWriter | None = None
        self.session_type: pa.DataType | None = None

    def _sessions(self, batch: Recommended) -> pa.Array:
        if isinstance(batch.sessions, pa.Array):
            return batch.sessions if self.session_type is None else batch.sessions.cast(self.session_type)
        values = batch.sessions
        integers = all(type(v) is int and INT64_RANGE[0] <= v <= INT64_RANGE[1] for v in values)
        if self.session_type is None:
            self.session_type = pa.int64() if integers and values else pa.string()
        if self.session_type == pa.int64():
            if not integers:
                bad = next(i for i, v in enumerate(values) if not (type(v) is int and INT64_RANGE[0] <= v <= INT64_RANGE[1]))
                raise InputFormatError(
                    f"{batch.where[bad]}: session {json.dumps(values[bad], default=str)} is not an integer, but the Parquet output's session column is int64 (from the first sessions)",
                    "Use one type of session id, or --format ndjson",
                )
            return pa.array(values, type=pa.int64())
        return pa.array([v if isinstance(v, str) else json.dumps(v, default=str) for v in values], type=pa.string())

    def write(self, batch: Recommended) -> None:
        sessions = self._sessions(batch)
        offsets = pa.array(batch.offsets.astype(np.int32))
        items = pa.ListArray.from_arrays(offsets, pa.array(batch.ids, type=self.id_type))
        scores = pa.ListArray.from_arrays(offsets, pa.array(batch.scores, type=pa.float32()), mask=pa.array(batch.fallback))
        table = pa.table({"session": sessions, "items": items, "scores": scores})
        if self.writer is None:
            self.session_type = sessions.type
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is None:  # no session: an empty table of the same layout
            schema = pa.schema([("session", self.session_type or pa.int64()), ("items", pa.list_(self.id_type)), ("scores", pa.list_(pa.float32()))])
            self.writer = pq.ParquetWriter(self.path, schema, compression="zstd")
        self.writer.close()


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


OUTPUTS: Registry[OutputFormat] = Registry("output format")
OUTPUTS.register("ndjson", OutputFormat("ndjson", 'one JSON line per session: {"session", "items", "scores"}', JsonLines))
OUTPUTS.register("parquet", OutputFormat("parquet", "columns session, items (raw ids), scores", ParquetOutput, (".parquet", ".pq"), needs_file=True))
OUTPUTS.register("csv", OutputFormat("csv", "OTTO's Kaggle submission: session_type,labels", SubmissionCsv, (".csv",), per_event_type=True))


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
