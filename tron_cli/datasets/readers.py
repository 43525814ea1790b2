"""Readers of raw click logs: each returns `RawLog`, events grouped by session in file order.

Formats shared by several datasets: OTTO JSON lines (OTTO, the synthetic set, yoochoose-1-64) and a user's own
tables, one event a row (CSV, TSV, Parquet, JSON lines), each also gzip-, zstd-, bzip2- or xz-compressed (`.gz`, `.zst`, `.bz2`, `.xz`); the
format follows the file name (`infer_format`), and a table's session, item and time columns are recognised by
their common names (`pick_columns`). `check_file`, `group` and `timestamps_ms` are the pieces a dataset's own
reader builds on (tron_cli/datasets/yoochoose.py, diginetica.py). Every malformed record ends in an
`InputFormatError` naming the file and the line (or column), so the user can fix it.
"""

from __future__ import annotations

import contextlib
import io
import lzma
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl
import pyarrow as pa

from tron_cli.artifacts.sessions import EXTRA_TYPES
from tron_cli.choices import CART_NAMES, COLUMN_NAMES, LOG_FORMATS, ORDER_NAMES
from tron_cli.errors import InputFormatError, UsageError
from tron_cli.reporting import SILENT, Reporter
from tron_cli.safe_json import JsonRefused, parse

OTTO_SCHEMA: dict[str, Any] = {
    "session": pl.Int64,
    "events": pl.List(pl.Struct({"aid": pl.Int64, "ts": pl.Int64, "type": pl.String})),
}
OTTO_TYPES = ("clicks", "carts", "orders")
BLOCK_BYTES = 16 << 20  # a block's parse holds ~20x its size in transient strings (about 320 MB at once)
PARSERS = 2  # blocks parsed at once: two cores' worth, and twice one parse's memory


@dataclass
class RawExtra:
    """A log's events beside its clicks (carts, orders), grouped by the same sessions as the clicks."""

    offsets: np.ndarray  # (S+1,) int64, aligned with the RawLog's sessions
    item: pa.Array  # (X,) raw item ids in the clicks' source type
    ts: np.ndarray  # (X,) int64 milliseconds
    types: np.ndarray  # (X,) int8: CART or ORDER


@dataclass
class RawLog:
    """ExtraEvents grouped by session: session s owns events offsets[s]:offsets[s+1] (in file order, not yet sorted).

    These are the clicks, the sequence a model learns; `extra` holds the other events of the same sessions
    (carts, orders) when the source has them."""

    session: np.ndarray  # (S,) int64 session ids, in order of first appearance
    offsets: np.ndarray  # (S+1,) int64
    item: pa.Array  # (E,) raw item ids in their source type
    ts: np.ndarray  # (E,) int64 milliseconds
    columns: dict[str, str] | None = None  # a table's column of each role (session, item, time)
    extra: RawExtra | None = None

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])


def attach_extra(log: RawLog, session: np.ndarray, item: pa.Array, ts: np.ndarray, types: np.ndarray) -> RawLog:
    """`log` with other events (one row each: session id, raw item, ts, type code) grouped under its sessions.

    ExtraEvents of sessions without a click in `log` are dropped: the clicks decide which sessions exist (MultiTRON
    merges orders into the sessions that survive)."""
    order = np.argsort(log.session, kind="stable")
    position = np.searchsorted(log.session, session, sorter=order).clip(max=max(len(order) - 1, 0))
    owner = order[position] if len(order) else position
    found = log.session[owner] == session if len(order) else np.zeros(len(session), dtype=bool)
    owner, rows = owner[found], np.flatnonzero(found)
    arranged = rows[np.lexsort((ts[rows], owner))]  # by session, then time (stable: ties keep file order)
    offsets = np.zeros(len(log.session) + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=len(log.session)), out=offsets[1:])
    item = item.cast(log.item.type) if item.type != log.item.type else item
    extra = RawExtra(offsets, item.take(pa.array(arranged)), ts[arranged], types[arranged].astype(np.int8))
    return RawLog(log.session, log.offsets, item=log.item, ts=log.ts, columns=log.columns, extra=extra)


def first_true(mask: pl.Series) -> int:
    """The row of the first True of a boolean column (one that has one)."""
    return int(mask.arg_max() or 0)


def check_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(f"{path} does not exist", "Check the path, or run tron download first")
    if path.stat().st_size == 0:
        raise InputFormatError(f"{path} is empty", "Give a file with at least one event")
    return path


# ----------------------------------------------------------------------------------------------- files by name

FORMATS = LOG_FORMATS
# decompressed by pyarrow, already a dependency; xz by the standard library's lzma (pyarrow has no xz codec)
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
FORMAT_HINT = "Pass --format " + "|".join(FORMATS[1:])


def compression_of(path: Path) -> str | None:
    """The codec a file name asks for (`clicks.csv.gz`: gzip), or None."""
    return COMPRESSIONS.get(Path(path).suffix.lower())


def log_name(path: Path) -> str:
    """A log's name without its extensions: `clicks.csv.gz` is clicks."""
    path = Path(path)
    stem = path.stem if compression_of(path) else path.name
    return Path(stem).stem if Path(stem).suffix.lower() in EXTENSIONS else stem


def infer_format(path: Path) -> str:
    """The format of a user's log from its name (`.csv`, `.tsv`, `.parquet`, `.jsonl`/`.ndjson`, each maybe
    `.gz`/`.zst`/`.bz2`/`.xz`); JSON lines are OTTO's sessions, or one event a line when the first record has no "events"."""
    path = Path(path)
    name = path.name.lower()
    stem = name[: -len(path.suffix)] if compression_of(path) else name
    extension = Path(stem).suffix
    fmt = EXTENSIONS.get(extension)
    if fmt is None:
        raise UsageError(f"{path}: cannot tell the format from the name ({extension or 'no extension'})", FORMAT_HINT)
    if fmt == "jsonl" and _otto_lines(check_file(path)):
        return "otto-jsonl"
    return fmt


def _otto_lines(path: Path) -> bool:
    """JSON lines are OTTO's unless the first record is an object without "events" (then: one event a line);
    a first line that is no JSON object goes to OTTO's reader, which names what is wrong with it."""
    with open_raw(path) as (handle, _):
        head = handle.read(1 << 20)
    for raw in head.split(b"\n"):
        if raw.strip():
            try:
                record = parse(raw)
            except JsonRefused:
                return True
            return not isinstance(record, dict) or "events" in record
    return True


@contextlib.contextmanager
def open_raw(path: Path) -> Iterator[tuple[IO[bytes], Callable[[], int]]]:
    """(the file's bytes, decompressed when its name says so; how many bytes of the file on disk are read)."""
    codec = compression_of(path)
    if codec is None:
        with open(path, "rb") as handle:
            yield handle, handle.tell
        return
    try:
        if codec == "xz":
            with open(path, "rb") as handle, lzma.LZMAFile(handle) as decompressed:
                yield decompressed, handle.tell
            return
        with pa.OSFile(str(path), "rb") as raw, pa.CompressedInputStream(raw, codec) as stream:
            yield stream, raw.tell
    except (OSError, pa.ArrowException, lzma.LZMAError) as error:
        raise InputFormatError(f"{path}: cannot be decompressed as {codec} ({str(error).splitlines()[0]})", "Check the file, or its extension") from None


def read_bytes(path: Path) -> bytes:
    """The whole file, decompressed when its name says so."""
    with open_raw(path) as (handle, _):
        return handle.read()


# ----------------------------------------------------------------------------------------------- OTTO JSONL


def _otto_line_error(path: Path, first_line: int, block: bytes, event_types: tuple[str, ...]) -> InputFormatError:
    """Find the first bad line of a block that polars refused or parsed with nulls, and say what is wrong."""
    for offset, raw in enumerate(block.split(b"\n")):
        line = first_line + offset
        if not raw.strip():
            continue
        try:
            record = parse(raw)
        except JsonRefused as error:
            return InputFormatError(f"{path}:{line}: {error}", "Fix or remove that line")
        problem = _otto_record_problem(record)
        if problem:
            return InputFormatError(
                f"{path}:{line}: {problem}", 'Each line must be {"session": int, "events": [{"aid": int, "ts": int ms, "type": "clicks"|"carts"|"orders"}]}'
            )
    last_line = first_line + block.count(b"\n")
    return InputFormatError(f"{path}: lines {first_line}-{last_line} could not be read", "Check the file's encoding and format")


def _int64(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(1 << 63) <= value < (1 << 63)


def _otto_record_problem(record) -> str | None:
    if not isinstance(record, dict):
        return "a line must be a JSON object"
    if not isinstance(record.get("session"), int) or isinstance(record.get("session"), bool):
        return 'field "session" is missing or not an integer'
    if not _int64(record["session"]):
        return f'field "session" ({record["session"]}) does not fit in 64 bits'
    events = record.get("events")
    if not isinstance(events, list):
        return 'field "events" is missing or not a list'
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            return f"events[{index}] is not an object"
        aid, ts, kind = event.get("aid"), event.get("ts"), event.get("type")
        if not isinstance(aid, int) or isinstance(aid, bool):
            return f"events[{index}].aid is missing or not an integer (got {aid!r})"
        if not isinstance(ts, int) or isinstance(ts, bool):
            return f"events[{index}].ts is missing or not an integer of milliseconds (got {ts!r})"
        if ts < 0:
            return f"events[{index}].ts is negative ({ts})"
        if not _int64(aid) or not _int64(ts):
            return f"events[{index}].{'aid' if not _int64(aid) else 'ts'} ({aid if not _int64(aid) else ts}) does not fit in 64 bits"
        if kind not in OTTO_TYPES:
            return f"events[{index}].type is {kind!r}, expected one of {', '.join(OTTO_TYPES)}"
    return None


# OTTO's own files are written compactly, in one key order: such a line is parsed by extracting its numbers
# (session, then aid and ts per event) and its type codes with vectorised regular expressions, about twice as
# fast as a general JSON parser. A block with any other line goes through the JSON parser instead.
_EVENT = r'\{"aid":\d{1,18},"ts":\d{1,18},"type":"(?:clicks|carts|orders)"\}'
CANONICAL_LINE = rf'^\{{"session":\d{{1,18}},"events":\[(?:{_EVENT}(?:,{_EVENT})*)?\]\}}$'
TYPE_CODES = {"clicks": "cl", "carts": "ca", "orders": "or"}


Block = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _extra_codes(types: np.ndarray, event_types: tuple[str, ...], spelling: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mask, type codes) of the carts and orders that are not part of the click sequence; `types` holds the
    type names, or their `spelling` (the canonical parser's two-letter codes)."""
    codes = np.zeros(len(types), dtype=np.int8)
    for name, code in EXTRA_TYPES.items():
        if name not in event_types:
            codes[types == (spelling[name] if spelling else name)] = code
    return codes > 0, codes


def _canonical_block(block: bytes, event_types: tuple[str, ...]) -> Block | None:
    """(sessions, kept events per session, aids, ts, other events per session, their aids, ts, type codes) of a
    block of canonical lines, or None if a line is not canonical."""
    lines = pl.read_csv(io.BytesIO(block), has_header=False, separator="\x01", quote_char=None, new_columns=["line"], schema={"line": pl.String})["line"]
    if lines.null_count() or not lines.str.contains(CANONICAL_LINE).all():
        return None
    numbers = lines.str.extract_all(r"\d+")
    per_line = numbers.list.len().to_numpy().astype(np.int64)  # 1 + 2 x events
    flat = numbers.explode().cast(pl.Int64).to_numpy()
    line_start = np.cumsum(per_line) - per_line
    index_in_line = np.arange(len(flat)) - np.repeat(line_start, per_line)
    codes = lines.str.extract_all(r'"type":"[a-z]{2}').explode().str.slice(8).to_numpy()
    keep = np.isin(codes, [TYPE_CODES[t] for t in event_types])
    all_aids = flat[index_in_line % 2 == 1]
    all_ts = flat[(index_in_line % 2 == 0) & (index_in_line > 0)]
    events = (per_line - 1) // 2
    owner = np.repeat(np.arange(len(per_line)), events)
    other, types = _extra_codes(codes, event_types, TYPE_CODES)
    n = len(per_line)
    return (
        flat[line_start],
        np.bincount(owner[keep], minlength=n).astype(np.int64),
        all_aids[keep],
        all_ts[keep],
        np.bincount(owner[other], minlength=n).astype(np.int64),
        all_aids[other],
        all_ts[other],
        types[other],
    )


def _json_block(path: Path, line: int, block: bytes, event_types: tuple[str, ...]) -> Block:
    """The same as `_canonical_block` for any valid JSON layout; a malformed line raises, naming it."""
    try:
        frame = pl.read_ndjson(io.BytesIO(block), schema=OTTO_SCHEMA)
        events = frame["events"].explode(empty_as_null=False).struct.unnest()
        broken = bool(
            frame["session"].null_count()
            or frame["events"].null_count()
            or events.null_count().sum_horizontal().item()
            or (events["ts"] < 0).any()
            or not events["type"].is_in(list(OTTO_TYPES)).all()
        )
    except pl.exceptions.PolarsError:
        broken = True
    if broken:
        raise _otto_line_error(path, line, block, event_types)
    kept = frame["events"].list.filter(pl.element().struct.field("type").is_in(list(event_types)))
    flat = kept.explode(empty_as_null=False).struct.unnest()
    others = [name for name in EXTRA_TYPES if name not in event_types]
    rest = frame["events"].list.filter(pl.element().struct.field("type").is_in(others))
    rest_flat = rest.explode(empty_as_null=False).struct.unnest().drop_nulls("aid")
    _, types = _extra_codes(rest_flat["type"].to_numpy().astype(str), event_types)
    return (
        frame["session"].to_numpy(),
        kept.list.len().to_numpy().astype(np.int64),
        flat["aid"].to_numpy(),
        flat["ts"].to_numpy(),
        rest.list.len().to_numpy().astype(np.int64),
        rest_flat["aid"].to_numpy(),
        rest_flat["ts"].to_numpy(),
        types,
    )


def read_otto_jsonl(path: Path, event_types: tuple[str, ...] = ("clicks",), report: Reporter = SILENT) -> Iterator[RawLog]:
    """OTTO sessions, keeping only `event_types`, one block of whole lines at a time (a `RawLog` of each parse
    block's sessions, in file order); aids stay raw (the catalogue maps them to dense ids later).

    Blocks are parsed by `PARSERS` threads (polars and numpy release the GIL), each while the next is read, and
    come back in file order, so an error names the first bad line of the file."""
    path = check_file(path)
    found = False
    with ThreadPoolExecutor(PARSERS) as pool:
        pending: deque[Future[RawLog]] = deque()
        for line, block in _line_blocks(path, report):
            pending.append(pool.submit(_parse_block, path, line, block=block, event_types=event_types))
            if len(pending) > PARSERS:
                found = True
                yield pending.popleft().result()
        while pending:
            found = True
            yield pending.popleft().result()
    if not found:
        raise InputFormatError(f"{path} has no sessions", "Give a file with at least one JSON line")


def _line_blocks(path: Path, report: Reporter) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, block) of about `BLOCK_BYTES` of whole lines, blank blocks left out."""
    line = 1
    with open_raw(path) as (handle, position), report.task(f"reading {path.name}", total=path.stat().st_size, unit="B") as task:
        remainder = b""
        while True:
            chunk = handle.read(BLOCK_BYTES)
            block = remainder + chunk
            if not chunk:
                remainder = b""
            else:
                cut = block.rfind(b"\n") + 1
                block, remainder = block[:cut], block[cut:]
            if block.strip():
                yield line, block
            line += block.count(b"\n")
            task.update(completed=position())
            if not chunk:
                break


def _parse_block(path: Path, line: int, block: bytes, event_types: tuple[str, ...]) -> RawLog:
    parsed = _canonical_block(block.rstrip(b"\n"), event_types) if b"\r" not in block else None
    sessions, lengths, aids, ts, extra_lengths, extra_aids, extra_ts, extra_types = (
        parsed if parsed is not None else _json_block(path, line, block, event_types)
    )
    return _otto_log(sessions, lengths, aids=aids, ts=ts, extra_lengths=extra_lengths, extra_aids=extra_aids, extra_ts=extra_ts, extra_types=extra_types)


def _otto_log(sessions, lengths, aids, ts, extra_lengths, extra_aids, extra_ts, extra_types) -> RawLog:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    extra_offsets = np.concatenate([[0], np.cumsum(extra_lengths)]).astype(np.int64)
    aids, extra_aids = _narrow(aids), _narrow(extra_aids)
    extra = RawExtra(extra_offsets, pa.array(extra_aids), extra_ts.astype(np.int64), extra_types.astype(np.int8)) if extra_offsets[-1] else None
    return RawLog(sessions.astype(np.int64, copy=False), offsets, pa.array(aids), ts.astype(np.int64, copy=False), extra=extra)


def _narrow(aids: np.ndarray) -> np.ndarray:
    """int32 when every aid fits: half the memory for OTTO's 200M aids (the catalogue keeps int64)."""
    if not len(aids) or (aids.min() >= np.iinfo(np.int32).min and aids.max() <= np.iinfo(np.int32).max):
        return aids.astype(np.int32)
    return aids


# ----------------------------------------------------------------------------------------------- tables


def group(session: pl.Series, item: pl.Series, ts: np.ndarray) -> RawLog:
    """Group event rows by session, sessions in order of first appearance, events in row order within each."""
    return group_rows(session, item, ts, np.arange(len(session), dtype=np.int64))[0]


def group_rows(session: pl.Series, item: pl.Series, ts: np.ndarray, rows: np.ndarray) -> tuple[RawLog, np.ndarray]:
    """`group` of rows numbered `rows` (increasing) in a larger log: (the sessions, each one's first row there)."""
    frame = pl.DataFrame({"session": session, "row": np.arange(len(session), dtype=np.int64)})
    if not session.dtype.is_integer():
        frame = frame.with_columns(pl.col("session").cast(pl.String))
    first = frame.group_by("session").agg(pl.col("row").min().alias("first"), pl.len().alias("n")).sort("first")
    code = frame.join(first.with_row_index("code").select("session", "code"), on="session", how="left", maintain_order="left")["code"].to_numpy()
    order = np.argsort(code, kind="stable")
    lengths = first["n"].to_numpy().astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = first["session"]
    session_ids = ids.to_numpy().astype(np.int64) if ids.dtype.is_integer() else np.arange(len(ids), dtype=np.int64)
    return RawLog(session_ids, offsets, item.to_arrow().take(pa.array(order)), ts[order]), rows[first["first"].to_numpy()]


def timestamps_ms(path: Path | str, column: str, values: pl.Series, unit: str, row_offset: int) -> np.ndarray:
    """Milliseconds since the epoch from ints (`unit` s/ms/us/ns, or auto by magnitude), datetimes or ISO-8601 strings."""
    stamps, is_ms = time_values(path, column, values, row_offset)
    return stamps if is_ms else numbers_to_ms(stamps, unit)


def time_values(path: Path | str, column: str, values: pl.Series, row_offset: int) -> tuple[np.ndarray, bool]:
    """(milliseconds, True) of datetimes or ISO-8601 strings, or (the numbers as float64, False) of a numeric
    column, whose unit `numbers_to_ms` applies once the whole log is seen; a bad value raises naming its line."""
    bad_hint = f"Fix column {column!r}, or choose --time-col / --time-unit"
    if values.dtype == pl.String:
        parsed = values.str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
        failed = parsed.is_null() & values.is_not_null()
        if failed.any() or values.is_null().any():
            row = first_true(failed | values.is_null())
            good = first_true(~(failed | values.is_null()))
            expected = f"the format of its first good value {values[good]!r}" if not (failed | values.is_null())[good] else "ISO 8601"
            raise InputFormatError(
                f"{path}:{row + row_offset}: column {column!r} value {values[row]!r} is not a timestamp in {expected} "
                "(one format a column; e.g. 2024-05-01T12:00:00Z)",
                bad_hint,
            )
        values = parsed
    if values.dtype.is_temporal():
        if values.is_null().any():
            raise InputFormatError(f"{path}:{first_true(values.is_null()) + row_offset}: column {column!r} is empty", bad_hint)
        return values.dt.epoch("ms").to_numpy().astype(np.int64), True
    if not values.dtype.is_numeric():
        raise InputFormatError(f"{path}: column {column!r} has type {values.dtype}, not a timestamp", bad_hint)
    if values.is_null().any() or (values.dtype.is_float() and values.is_nan().any()):
        row = first_true(values.is_null() | (values.is_nan() if values.dtype.is_float() else values.is_null()))
        raise InputFormatError(f"{path}:{row + row_offset}: column {column!r} is empty or NaN", bad_hint)
    if (values < 0).any():
        row = first_true(values < 0)
        raise InputFormatError(f"{path}:{row + row_offset}: column {column!r} is negative ({values[row]})", bad_hint)
    return values.to_numpy().astype(np.float64), False


def numbers_to_ms(numbers: np.ndarray, unit: str, top: float | None = None) -> np.ndarray:
    """Numbers of `unit` (s/ms/us/ns; auto: told apart by the magnitude of `top`, the log's largest) as milliseconds."""
    if unit == "auto":
        top = top if top is not None else (numbers.max() if len(numbers) else 0)
        unit = "s" if top < 1e11 else "ms" if top < 1e14 else "us" if top < 1e17 else "ns"
    scale = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}[unit]
    return np.round(numbers * scale).astype(np.int64)


ROLES = ("session", "item", "time")
FLAGS = {"session": "--session-col", "item": "--item-col", "time": "--time-col"}


def _plain(name: str) -> str:
    return re.sub(r"[\s_.\-]", "", name).lower()


def pick_columns(path: Path | str, columns: list[str], given: dict[str, str | None]) -> tuple[dict[str, str], list[str]]:
    """({role: column}, the roles recognised by name rather than given): a column given (`given[role]`) must
    exist; a role not given takes the one column whose name is a common name for it, else the user is shown
    the columns there are and the flags that pick them."""
    picked: dict[str, str] = {}
    for role in ROLES:
        name = given.get(role)
        if name is not None:
            if name not in columns:
                raise InputFormatError(f"{path}: column {name!r} not found (columns: {', '.join(columns)})", f"Pick the {role} column with {FLAGS[role]}")
            picked[role] = name
    recognised, unclear = [], []
    for role in ROLES:
        if role in picked:
            continue
        known = {_plain(name) for name in COLUMN_NAMES[role]}
        candidates = [column for column in columns if _plain(column) in known and column not in picked.values()]
        if len(candidates) == 1:
            picked[role] = candidates[0]
            recognised.append(role)
        else:
            unclear.append(f"{role} ({'several could be: ' + ', '.join(candidates) if candidates else 'none recognised'})")
    if unclear:
        missing = [role for role in ROLES if role not in picked]
        raise InputFormatError(
            f"{path}: which column is the {' and the '.join(unclear)}? Its columns: {', '.join(columns)}",
            f"Pick {'it' if len(missing) == 1 else 'them'} with " + ", ".join(f"{FLAGS[role]} COLUMN" for role in missing),
        )
    return picked, recognised


def read_frame(path: Path, fmt: str, separator: str | None = None) -> pl.DataFrame:
    """A user's table (csv, tsv, parquet, or jsonl of one event a line), decompressed when its name says so."""
    path = check_file(path)
    source: Path | io.BytesIO = path if compression_of(path) is None else io.BytesIO(read_bytes(path))
    try:
        if fmt in ("csv", "tsv"):
            # every column as text: an id keeps its spelling ("0042" is not 42) and a column that changes type
            # part-way is found at its row (`id_column`, `_numbers`), not guessed from the first rows
            return pl.read_csv(source, separator=separator or sniff_separator(path, fmt), infer_schema=False)
        if fmt == "jsonl":
            return pl.read_ndjson(source, infer_schema_length=10000)
        return pl.read_parquet(source)
    except (pl.exceptions.PolarsError, OSError, pa.ArrowException) as error:
        if fmt == "jsonl":
            _find_bad_json_line(path, source.getvalue() if isinstance(source, io.BytesIO) else path.read_bytes())
        raise InputFormatError(f"{path}: cannot be read as {fmt} ({str(error).splitlines()[0]})", f"Check the file is {fmt}, or {FORMAT_HINT}") from None


def _find_bad_json_line(path: Path, data: bytes) -> None:
    """Raise naming the first line of `data` that is not a JSON object, if there is one."""
    for line, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            record = parse(raw)
        except JsonRefused as error:
            raise InputFormatError(f"{path}:{line}: {error}", "Fix or remove that line") from None
        if not isinstance(record, dict):
            raise InputFormatError(f"{path}:{line}: a line must be a JSON object, one event with its session, item and time")


SEPARATORS = (",", "\t", ";", "|")


def sniff_separator(path: Path, fmt: str) -> str:
    """The separator a text table's header line uses most (Diginetica's `.csv` is `;`), else the format's own."""
    with open_raw(path) as (handle, _):
        header = handle.read(1 << 16).split(b"\n", 1)[0].decode("utf-8", errors="replace")
    counts = {separator: header.count(separator) for separator in SEPARATORS}
    best = max(SEPARATORS, key=lambda separator: counts[separator])
    return best if counts[best] else ("\t" if fmt == "tsv" else ",")


def read_table(
    path: Path,
    fmt: str,
    session_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    time_unit: str = "auto",
    separator: str | None = None,
    type_col: str | None = None,
    order_types: tuple[str, ...] = ORDER_NAMES,
    cart_types: tuple[str, ...] = CART_NAMES,
    id_type: str = "auto",
) -> RawLog:
    """A user's own table file, one row per event, with session, item and time columns (given, or recognised):
    `table_log` of the file read by its format."""
    path = check_file(path)
    # where a row is: a text file's line (its header is line 1, so row r is line r + 2, JSON lines r + 1), a Parquet row counted from 1
    row_offset = {"csv": 2, "tsv": 2, "jsonl": 1}.get(fmt, 1)
    return table_log(
        path,
        read_frame(path, fmt, separator),
        row_offset=row_offset,
        id_type=id_type,
        session_col=session_col,
        item_col=item_col,
        time_col=time_col,
        time_unit=time_unit,
        type_col=type_col,
        order_types=order_types,
        cart_types=cart_types,
    )


def table_log(
    path: Path | str,
    frame: pl.DataFrame,
    *,
    row_offset: int = 1,
    session_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    time_unit: str = "auto",
    type_col: str | None = None,
    order_types: tuple[str, ...] = ORDER_NAMES,
    cart_types: tuple[str, ...] = CART_NAMES,
    id_type: str = "auto",
) -> RawLog:
    """Events of a table, one row each, grouped by session; `path` names the table in messages (a file, or a table
    handed over in memory, whose rows are counted from 1), and its row r (from 0) is line r + `row_offset` there.
    `id_type` says how text ids are read (`id_column`).

    With `type_col`, rows whose type is one of `order_types` are orders, of `cart_types` carts (compared without
    case), and every other row a click."""
    columns, _ = pick_columns(path, frame.columns, {"session": session_col, "item": item_col, "time": time_col})
    session_col, item_col, time_col = columns["session"], columns["item"], columns["time"]
    if frame.height == 0:
        raise InputFormatError(f"{path} has no rows", "Give a file with at least one event")
    for column in (session_col, item_col):
        nulls = frame[column].is_null()
        if nulls.any():
            raise InputFormatError(f"{path}:{first_true(nulls) + row_offset}: column {column!r} is empty", "Every event needs a session and an item")
        if frame[column].dtype.is_float():
            raise InputFormatError(f"{path}: column {column!r} holds decimals; ids must be integers or strings", "Fix the column")
    session, item = (
        id_column(path, frame[column], flag=flag, id_type=id_type, row_offset=row_offset)
        for column, flag in ((session_col, "--session-col"), (item_col, "--item-col"))
    )
    ts = timestamps_ms(path, time_col, values=text_numbers(frame[time_col]), unit=time_unit, row_offset=row_offset)
    if type_col is None:
        raw = group(session, item, ts)
    else:
        frame = frame.with_columns(session.alias(session_col), item.alias(item_col))  # the ids as kept (`id_column`)
        raw = _typed(path, frame, session_col=session_col, item_col=item_col, type_col=type_col, ts=ts, order_types=order_types, cart_types=cart_types)
        columns = {**columns, "type": type_col}
    raw.columns = columns
    return raw


INT64_MAX = (1 << 63) - 1


CANONICAL_INTEGER = r"^-?(0|[1-9][0-9]*)$"  # how an integer is spelled when its spelling carries nothing else
DECIMAL = r"^\s*-?[0-9]+\.[0-9]*\s*$"  # 42.0: an id written by a tool that read it as a float
ID_TYPES = ("auto", "text", "number")


def id_column(path: Path | str, values: pl.Series, flag: str, id_type: str = "auto", row_offset: int = 0) -> pl.Series:
    """Ids as tron keeps them: integers that fit in 64 signed bits as Int64; wider ones (uint64 ids of 2^63 and
    above) as their decimal spelling, a string id that `tron recommend` also matches when given as a number;
    strings as they are. Text (a CSV) keeps its spelling: it becomes integers only when every value is spelled as
    one (`0042` and `42` stay two items), unless `id_type` says "number" (`0042` is 42) or "text" (every id as
    written). A column whose first values are integers and a later one is not changes type part-way: refused at
    that row, rather than silently read as text. Booleans, lists and other types are refused, naming the flag."""
    dtype = values.dtype
    if dtype == pl.String and id_type != "text":
        numeric = values.str.contains(r"^\s*[-+]?[0-9]+\s*$") if id_type == "number" else values.str.contains(CANONICAL_INTEGER)
        if bool(numeric.all()):
            integers = values.str.strip_chars().cast(pl.Int64, strict=False)
            if integers.is_null().any():  # beyond int64: the decimal spelling, as wide integers are kept
                return values.str.strip_chars().str.strip_chars_start("+")
            return integers
        if bool(values.str.contains(DECIMAL).all()):
            raise InputFormatError(f"{path}: column {values.name!r} holds decimals; ids must be integers or strings", "Fix the column, or --id-type text")
        if id_type == "number" or bool(numeric[0]):
            row = first_true(~numeric)
            spelled = "an integer" if id_type == "number" else "an integer like the ids before it"
            raise InputFormatError(
                f"{path}:{row + row_offset}: column {values.name!r} value {values[row]!r} is not {spelled} (the column changes type part-way)",
                "Fix the value, or say how to read the ids: --id-type text (every id as written) or --id-type number (0042 is 42)",
            )
        return values
    if dtype.is_integer():
        if values.max() > INT64_MAX or values.min() < -INT64_MAX - 1:  # type: ignore[operator]
            return values.cast(pl.String)
        return values.cast(pl.Int64)
    if dtype in (pl.String, pl.Categorical, pl.Enum):
        return values.cast(pl.String)
    raise InputFormatError(f"{path}: column {values.name!r} has type {dtype}; ids must be integers or strings", f"Fix the column, or pick another with {flag}")


def text_numbers(values: pl.Series) -> pl.Series:
    """A text column of numbers as numbers (integers when every value is one), other columns as they are."""
    number = r"^\s*(-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?|[Nn]a[Nn])\s*$"  # NaN read as a number: refused at its row
    if values.dtype != pl.String or not bool(values.str.contains(number).all()):
        return values
    stripped = values.str.strip_chars()
    integers = stripped.cast(pl.Int64, strict=False)
    return integers if not integers.is_null().any() else stripped.cast(pl.Float64)


def _typed(path: Path | str, frame: pl.DataFrame, session_col: str, item_col: str, type_col: str, ts: np.ndarray, order_types, cart_types) -> RawLog:
    """Clicks grouped by session, and the orders and carts of the same sessions beside them."""
    if type_col not in frame.columns:
        raise InputFormatError(f"{path}: column {type_col!r} not found (columns: {', '.join(frame.columns)})", "Pick the event type column with --type-col")
    kinds = frame[type_col].cast(pl.String).str.to_lowercase().fill_null("")
    codes = np.zeros(frame.height, dtype=np.int8)
    codes[kinds.is_in([t.lower() for t in cart_types]).to_numpy()] = EXTRA_TYPES["carts"]
    codes[kinds.is_in([t.lower() for t in order_types]).to_numpy()] = EXTRA_TYPES["orders"]
    session = frame[session_col]
    if not session.dtype.is_integer():  # one integer key per session for clicks and other events alike
        session = session.cast(pl.String).rank("dense").cast(pl.Int64)
    clicks = codes == 0
    if not clicks.any():
        raise InputFormatError(f"{path}: every row is an order or a cart (column {type_col!r})", "A log needs clicks: check --order-types and --cart-types")
    log = group(session.filter(pl.Series(clicks)), frame[item_col].filter(pl.Series(clicks)), ts[clicks])
    other = ~clicks
    return attach_extra(
        log, session.filter(pl.Series(other)).to_numpy(), item=frame[item_col].filter(pl.Series(other)).to_arrow(), ts=ts[other], types=codes[other]
    )
