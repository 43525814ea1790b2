"""A log given as one file or many: a file, a directory of parts, a glob, or a hive-partitioned tree.

Spark, DuckDB and Polars hand over a log as a directory of parts (`part-00000-….parquet`), often partitioned as
`date=2024-01-01/…`. `resolve` turns what the user typed into the parts in a fixed order (sorted by their path
below the directory or the glob's fixed prefix), each with the values of its partition directories, which become
columns of the log as in Spark and pyarrow (strings, or integers when every value of the key is one). Files that
writers leave beside the parts (`_SUCCESS`, `.crc` checksums, anything hidden) are not parts. `record` says
which parts were read, for dataset.json.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tron_cli.errors import InputFormatError, MissingInputError

GLOB_CHARACTERS = re.compile(r"[*?\[]")
HIVE_DEFAULT = "__HIVE_DEFAULT_PARTITION__"  # Spark's and Hive's name for a null partition value
LISTED_PARTS = 64  # dataset.json lists up to this many parts one by one; more are summed up in one digest


@dataclass
class Part:
    """One file of a log, with the values of its `key=value` directories."""

    path: Path
    partition: dict[str, str | None] = field(default_factory=dict)
    frame: Any = None  # a polars table handed over in memory (the Python API), read instead of `path`


@dataclass
class LogParts:
    """What `--train`/`--test`/`--input` named, and the files it holds in reading order."""

    given: Path  # as typed: messages name it so
    parts: list[Part]
    kind: str  # "file", "directory" or "glob"

    @property
    def partition_columns(self) -> list[str]:
        return list(self.parts[0].partition) if self.parts else []

    def partition_values(self) -> dict[str, list[Any]]:
        """Each partition column's value per part: integers when every value of the column is one, else strings."""
        out: dict[str, list[Any]] = {}
        for key in self.partition_columns:
            values = [part.partition[key] for part in self.parts]
            whole = all(value is None or re.fullmatch(r"[+-]?\d{1,18}", value) for value in values)
            out[key] = [None if value is None else int(value) if whole else value for value in values]
        return out


def _is_part(name: str) -> bool:
    """Whether a file in a directory of parts is one: writers' markers and checksums are not."""
    return not name.startswith((".", "_")) and not name.endswith(".crc")


def _partition(relative: Path, where: Path) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for directory in relative.parts[:-1]:
        key, equals, value = directory.partition("=")
        if not equals or not key:
            continue
        if key in values:
            raise InputFormatError(f"{where}: the partition column {key!r} appears twice in its path", "Give each partition key once per path")
        value = urllib.parse.unquote(value)
        values[key] = None if value == HIVE_DEFAULT else value
    return values


def _parts_below(root: Path, files: list[Path]) -> list[Part]:
    parts = [Part(path, _partition(path.relative_to(root), path)) for path in sorted(files, key=lambda p: p.relative_to(root).parts)]
    if parts:
        keys = list(parts[0].partition)
        for part in parts[1:]:
            if list(part.partition) != keys:
                raise InputFormatError(
                    f"{part.path}: partitioned by {', '.join(part.partition) or 'nothing'}, but {parts[0].path} by {', '.join(keys) or 'nothing'}",
                    "Give parts of one layout (the same key=value directories, in the same order)",
                )
    return parts


def resolve(given: Path, flag: str) -> LogParts:
    """The parts of a log: `given` is a file (or a pipe), a directory (every part below it, at any depth), or a glob
    (`events/*.parquet`, `events/**/*.csv.gz`). A directory without parts and a glob that matches nothing are
    errors that say so."""
    text = str(given)
    path = Path(given)
    if path.is_dir():
        files = []
        for root, directories, names in os.walk(path):
            directories[:] = [d for d in directories if _is_part(d)]  # hidden and _temporary directories: writers' leftovers
            files += [Path(root) / name for name in names if _is_part(name)]
        if not files:
            raise InputFormatError(
                f"{path} is a directory without any part (no file but hidden ones, _SUCCESS or .crc)", f"Give {flag} a directory that holds the log's files"
            )
        return LogParts(path, _parts_below(path, files), "directory")
    if path.exists():
        return LogParts(path, [Part(path)], "file")
    if GLOB_CHARACTERS.search(text):
        matches = [Path(match) for match in glob.glob(text, recursive=True) if Path(match).is_file() and _is_part(Path(match).name)]
        if not matches:
            raise InputFormatError(f"{text} matches no file", f"Check the pattern given to {flag} (quote it, so that the shell leaves it to tron)")
        fixed = Path(*[piece for piece in _fixed_prefix(text)]) if _fixed_prefix(text) else Path(".")
        return LogParts(path, _parts_below(fixed, matches), "glob")
    raise MissingInputError(f"{path} does not exist", f"Check the path given to {flag}")


def _fixed_prefix(pattern: str) -> list[str]:
    """The directories of a glob before its first wildcard: partition values are read below them."""
    pieces = Path(pattern).parts
    fixed = []
    for piece in pieces[:-1]:
        if GLOB_CHARACTERS.search(piece):
            break
        fixed.append(piece)
    return fixed


def record(log: LogParts, checksum: Callable[[Path], tuple[int, str]]) -> list[dict[str, Any]]:
    """dataset.json's entries for a log: {path, size, sha256} per part, or for more than `LISTED_PARTS` parts one
    entry {path (as given, absolute), parts (the count), size (in all), sha256 over the sorted list of the parts'
    relative paths, sizes and digests}."""
    entries: list[dict[str, Any]] = []
    for part in log.parts:
        size, sha256 = checksum(part.path)
        entries.append({"path": str(part.path.resolve()), "size": size, "sha256": sha256})
    if len(entries) <= LISTED_PARTS:
        return entries
    base = log.given if log.kind == "directory" else Path(*_fixed_prefix(str(log.given))) if _fixed_prefix(str(log.given)) else Path(".")
    lines = sorted(f"{os.path.relpath(str(entry['path']), base.resolve())}\t{entry['size']}\t{entry['sha256']}\n" for entry in entries)
    digest = hashlib.sha256("".join(lines).encode()).hexdigest()
    given = str(log.given.resolve()) if log.kind == "directory" else os.path.abspath(str(log.given))
    return [{"path": given, "parts": len(entries), "size": sum(entry["size"] for entry in entries), "sha256": digest}]
