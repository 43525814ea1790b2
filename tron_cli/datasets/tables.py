"""A user's own table log (CSV, TSV, Parquet or JSON lines, one event a row) over all its parts, grouped by session
in bounded memory.

Three passes, so that no step holds more than a part or a hash partition of the rows:

1. each part (a Parquet part a row group at a time) is read, its session, item, time and type columns checked
   and converted as a single file's are (`readers`), and spilled to a temporary Arrow file;
2. what only the whole log tells is decided (integer or string ids, the unit of numeric times, the session keys
   of string ids), and every row, numbered in log order, goes to one of P hash partitions of its session;
3. each partition is grouped by session (`readers.group_rows`) into a block of the `BlockStore`; the sessions'
   first rows give their order in the whole log, the order a single file would have given.

With P = 1 (a log that fits the budget) the rows are grouped at once, as `readers.read_table` groups one file.
Parts are the files of `parts.resolve`, in its order: the log is their concatenation, and a hive partition column
(`date=...`) is a column like the others, which may be the time.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tron_cli.artifacts.sessions import EXTRA_TYPES
from tron_cli.choices import CART_NAMES, ORDER_NAMES
from tron_cli.datasets import readers
from tron_cli.datasets.blocks import BlockStore, Budget
from tron_cli.datasets.parts import LogParts, Part
from tron_cli.errors import InputFormatError
from tron_cli.reporting import SILENT, Reporter
from tron_cli.safe_json import JsonRefused, parse

ROW_BYTES = 48  # a row in memory while it is grouped: session, item, time, type and row number, and their sort
PARQUET_BATCH = 1 << 20  # rows of a Parquet part read at a time
GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing spreads session ids over the partitions


@dataclass(frozen=True)
class TableOptions:
    """How to read a table: its columns (None: recognised by name), the unit of numeric times, the separator of a
    text table, the event type column and its values that mean orders and carts."""

    session_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    time_unit: str = "auto"
    id_type: str = "auto"  # how a text table's ids are read (readers.id_column)
    separator: str | None = None
    type_col: str | None = None
    order_types: tuple[str, ...] = ORDER_NAMES
    cart_types: tuple[str, ...] = CART_NAMES


@dataclass
class _Spilled:
    """A part's checked rows on disk, and what the whole log needs to know of them."""

    part: Part
    file: Path
    rows: int
    id_kinds: dict[str, str]  # session/item: "int", "wide" (integers beyond int64, kept as decimal strings) or "string"
    time_is_ms: bool
    top: float  # the largest time number (numeric times)
    clicks: int


def _columns_of(part: Part, fmt: str, separator: str | None) -> list[str]:
    """A part's column names, from its schema or first line, without reading its rows."""
    if part.frame is not None:
        return [*part.frame.columns, *(key for key in part.partition if key not in part.frame.columns)]
    path = readers.check_file(part.path)
    if fmt == "parquet":
        try:
            names = pq.read_schema(path if readers.compression_of(path) is None else io.BytesIO(readers.read_bytes(path))).names
        except (pa.ArrowException, OSError) as error:
            raise InputFormatError(
                f"{path}: cannot be read as parquet ({str(error).splitlines()[0]})", f"Check the file is parquet, or {readers.FORMAT_HINT}"
            ) from None
    else:
        with readers.open_raw(path) as (handle, _):
            head = handle.read(1 << 20)
        number, first = next(((number, line) for number, line in enumerate(head.split(b"\n"), 1) if line.strip()), (1, b""))
        if fmt == "jsonl":
            try:
                record = parse(first)
            except JsonRefused as error:
                raise InputFormatError(f"{path}:{number}: {error}", "Fix or remove that line") from None
            names = list(record) if isinstance(record, dict) else []
        else:
            text = first.decode("utf-8", errors="replace").rstrip("\r")
            names = [name.strip('"') for name in text.split(separator or readers.sniff_separator(path, fmt))]
    return [*names, *(key for key in part.partition if key not in names)]


def _frames(part: Part, fmt: str, columns: list[str], *, separator: str | None, partition: dict[str, Any]) -> Any:
    """The part's rows of `columns` (those it has), a Parquet part or a table a batch at a time, with its partition values."""
    if part.frame is not None:
        present = [column for column in columns if column in part.frame.columns]
        frames: Any = (part.frame.slice(start, PARQUET_BATCH).select(present) for start in range(0, part.frame.height, PARQUET_BATCH))
    elif fmt == "parquet":
        path = readers.check_file(part.path)
        source = path if readers.compression_of(path) is None else io.BytesIO(readers.read_bytes(path))
        try:
            parquet = pq.ParquetFile(source)
        except (pa.ArrowException, OSError) as error:
            raise InputFormatError(
                f"{path}: cannot be read as parquet ({str(error).splitlines()[0]})", f"Check the file is parquet, or {readers.FORMAT_HINT}"
            ) from None
        present = [column for column in columns if column in parquet.schema_arrow.names]
        frames = (pl.from_arrow(batch) for batch in parquet.iter_batches(batch_size=PARQUET_BATCH, columns=present))
    else:
        whole = readers.read_frame(readers.check_file(part.path), fmt, separator)
        frames = [whole.select([column for column in columns if column in whole.columns])]
    for frame in frames:
        assert isinstance(frame, pl.DataFrame)
        missing = {key: value for key, value in partition.items() if key in columns and key not in frame.columns}
        yield frame.with_columns(pl.lit(value).alias(key) for key, value in missing.items()) if missing else frame


def _id_kind(given: pl.Series, kept: pl.Series) -> str:
    """ "int", "wide" (integers beyond int64, kept as their decimal spelling) or "string"."""
    if kept.dtype == pl.Int64:
        return "int"
    wide = given.dtype.is_integer() or (given.dtype == pl.String and bool(kept.str.contains(readers.CANONICAL_INTEGER).all()))
    return "wide" if wide else "string"


def _spill_part(part: Part, fmt: str, roles: dict[str, str], *, options: TableOptions, partition: dict[str, Any], directory: Path, index: int) -> _Spilled:
    """Check and convert a part's role columns, a batch at a time, into one Arrow file."""
    # where a row is: a text file's line (its header is line 1, so row r is line r + 2, JSON lines r + 1), a Parquet row counted from 1
    row_offset = {"csv": 2, "tsv": 2, "jsonl": 1}.get(fmt, 1)
    wanted = [roles["session"], roles["item"], roles["time"], *([options.type_col] if options.type_col else [])]
    path, file = part.path, directory / f"part-{index:06d}.arrow"
    kinds: dict[str, str] = {}
    time_is_ms: bool | None = None
    rows, clicks, top = 0, 0, 0.0
    writer = None
    try:
        for frame in _frames(part, fmt, wanted, separator=options.separator, partition=partition):
            for role in ("session", "item", "time"):
                if roles[role] not in frame.columns:
                    raise InputFormatError(
                        f"{path}: no column {roles[role]!r} (its columns: {', '.join(frame.columns)})",
                        "Give parts that all hold the session, item and time columns",
                    )
            converted = {}
            for role, flag in (("session", "--session-col"), ("item", "--item-col")):
                column = roles[role]
                nulls = frame[column].is_null()
                if nulls.any():
                    raise InputFormatError(
                        f"{path}:{readers.first_true(nulls) + rows + row_offset}: column {column!r} is empty", "Every event needs a session and an item"
                    )
                if frame[column].dtype.is_float():
                    raise InputFormatError(f"{path}: column {column!r} holds decimals; ids must be integers or strings", "Fix the column")
                values = readers.id_column(path, frame[column], flag=flag, id_type=options.id_type, row_offset=rows + row_offset)
                kind = _id_kind(frame[column], values)
                if kinds.setdefault(role, kind) != kind:
                    kinds[role] = "wide" if {kinds[role], kind} == {"int", "wide"} else "string"
                converted[role] = values
            stamps, is_ms = readers.time_values(path, roles["time"], values=readers.text_numbers(frame[roles["time"]]), row_offset=rows + row_offset)
            if time_is_ms is None:
                time_is_ms = is_ms
            elif time_is_ms != is_ms:
                raise InputFormatError(f"{path}: column {roles['time']!r} changes type within the file", "Give one time format a column")
            if not is_ms and len(stamps):
                top = max(top, float(stamps.max()))
            codes = _type_codes(frame, options)
            clicks += int((codes == 0).sum())
            table = pa.table({"session": _ids(converted["session"]), "item": _ids(converted["item"]), "time": pa.array(stamps), "type": pa.array(codes)})
            if writer is None:
                writer, schema = pa.ipc.new_file(pa.OSFile(str(file), "wb"), table.schema), table.schema
            elif table.schema != schema:
                writer.close()
                table = _rewrite(file, schema, table)
                writer, schema = pa.ipc.new_file(pa.OSFile(str(file), "wb"), table.schema), table.schema
            writer.write_table(table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return _Spilled(part, file, rows=rows, id_kinds=kinds, time_is_ms=bool(time_is_ms), top=top, clicks=clicks)


def _ids(values: pl.Series) -> pa.Array:
    """Ids as spilled: int64, or large strings (whatever string layout polars hands over)."""
    array = values.to_arrow()
    return array.cast(pa.int64()) if pa.types.is_integer(array.type) else array.cast(pa.large_string())


def _batches(file: Path) -> Any:
    """An Arrow file's record batches, one at a time."""
    with pa.OSFile(str(file), "rb") as source:
        reader = pa.ipc.open_file(source)
        for index in range(reader.num_record_batches):
            yield reader.get_batch(index)


def _rewrite(file: Path, schema: pa.Schema, table: pa.Table) -> pa.Table:
    """A part whose later batch holds strings where earlier ones held integers: the part's rows so far and the
    batch, all with string ids (returned whole, to be written again)."""
    earlier = _read(file)
    merged = pa.schema(
        [pa.field(name, pa.large_string() if schema.field(name).type != table.schema.field(name).type else schema.field(name).type) for name in schema.names]
    )
    return pa.concat_tables([earlier.cast(merged), table.cast(merged)])


def _read(file: Path) -> pa.Table:
    with pa.OSFile(str(file), "rb") as source:
        return pa.ipc.open_file(source).read_all()


def _type_codes(frame: pl.DataFrame, options: TableOptions) -> np.ndarray:
    """Per row: 0 a click, else the `EXTRA_TYPES` code of a cart or an order (by --type-col; a part without that
    column, an older one, holds clicks)."""
    codes = np.zeros(frame.height, dtype=np.int8)
    if options.type_col is None or options.type_col not in frame.columns:
        return codes
    kinds = frame[options.type_col].cast(pl.String).str.to_lowercase().fill_null("")
    codes[kinds.is_in([t.lower() for t in options.cart_types]).to_numpy()] = EXTRA_TYPES["carts"]
    codes[kinds.is_in([t.lower() for t in options.order_types]).to_numpy()] = EXTRA_TYPES["orders"]
    return codes


def _unify(spilled: list[_Spilled], role: str, column: str) -> str:
    """The id kind of the whole log: integers, or strings when a part holds integers beyond int64 (all become
    their decimal spelling, as in one file); a part of strings among parts of integers is refused, naming it."""
    kinds = {entry.id_kinds[role] for entry in spilled if entry.rows}
    if "string" in kinds and len(kinds) > 1:
        strings = next(entry for entry in spilled if entry.id_kinds.get(role) == "string")
        numbers = next(entry for entry in spilled if entry.id_kinds.get(role) in ("int", "wide"))
        raise InputFormatError(
            f"{strings.part.path}: column {column!r} holds strings, but {numbers.part.path} integers",
            "Give parts whose ids are of one kind (cast them in the writer)",
        )
    return "string" if kinds & {"string", "wide"} else "int"


def read_table_log(log: LogParts, fmt: str, options: TableOptions, *, store: BlockStore, budget: Budget, report: Reporter = SILENT) -> dict[str, str]:
    """Read every part of a table log into `store`, grouped by session; returns the columns of each role."""
    separator = options.separator
    names: list[str] = []
    for part in log.parts:
        names += [name for name in _columns_of(part, fmt, separator) if name not in names]
    roles, _ = readers.pick_columns(log.given, names, {"session": options.session_col, "item": options.item_col, "time": options.time_col})
    if options.type_col is not None and options.type_col not in names:
        raise InputFormatError(
            f"{log.given}: column {options.type_col!r} not found (columns: {', '.join(names)})", "Pick the event type column with --type-col"
        )
    partition_values = log.partition_values()
    spilled = []
    with report.task(f"reading {log.given.name}", total=len(log.parts), unit="parts") as task:
        for index, part in enumerate(log.parts):
            values = {key: partition_values[key][index] for key in partition_values}
            spilled.append(_spill_part(part, fmt, roles, options=options, partition=values, directory=store.directory, index=index))
            task.update(advance=1)
    total = sum(entry.rows for entry in spilled)
    if total == 0:
        raise InputFormatError(f"{log.given} has no rows", "Give a file with at least one event")
    if options.type_col is not None and not sum(entry.clicks for entry in spilled):
        raise InputFormatError(
            f"{log.given}: every row is an order or a cart (column {options.type_col!r})", "A log needs clicks: check --order-types and --cart-types"
        )
    kinds = {role: _unify(spilled, role, roles[role]) for role in ("session", "item")}
    timed = {entry.time_is_ms for entry in spilled if entry.rows}
    if len(timed) > 1:
        odd = next(entry for entry in spilled if entry.rows and entry.time_is_ms != spilled[0].time_is_ms)
        raise InputFormatError(f"{odd.part.path}: column {roles['time']!r} is not of the time type of {spilled[0].part.path}", "Give one time format a column")
    top = max(entry.top for entry in spilled)
    keys = _string_sessions(spilled) if kinds["session"] == "string" else None
    n_partitions = max(1, -(-total * ROW_BYTES // budget.partition_bytes))
    writers: list[Any] = [None] * n_partitions
    files = [store.directory / f"partition-{p:05d}.arrow" for p in range(n_partitions)]
    row = 0
    try:
        for entry in spilled:
            for batch in _batches(entry.file) if entry.rows else ():
                session = batch.column("session")
                if keys is not None:  # one integer key per session: its rank among the log's sorted session ids
                    session = pc.add(pc.index_in(session.cast(pa.large_string()), keys), 1)
                item = batch.column("item")
                item = item.cast(pa.large_string()) if kinds["item"] == "string" else item.cast(pa.int64())
                time = np.asarray(batch.column("time"))
                stamps = time if entry.time_is_ms else readers.numbers_to_ms(time, options.time_unit, top=top)
                session_np = np.asarray(session.cast(pa.int64()))
                rows = np.arange(row, row + batch.num_rows, dtype=np.int64)
                chunk = pa.table({"row": rows, "session": session_np, "item": item, "ts": stamps, "type": batch.column("type")})
                target = ((session_np.astype(np.uint64) * GOLDEN) >> np.uint64(32)) % np.uint64(n_partitions)
                for p in np.unique(target).tolist():
                    piece = chunk.filter(pa.array(target == p)) if n_partitions > 1 else chunk
                    if writers[p] is None:
                        writers[p] = pa.ipc.new_file(pa.OSFile(str(files[p]), "wb"), piece.schema)
                    writers[p].write_table(piece)
                row += batch.num_rows
            entry.file.unlink(missing_ok=True)
    finally:
        for writer in writers:
            if writer is not None:
                writer.close()
    firsts = []
    for p, file in enumerate(files):
        if writers[p] is None:
            continue
        table = _read(file)
        file.unlink()
        raw, first = _group_partition(table, typed=options.type_col is not None)
        if len(raw.session):
            store.add(raw, positions=np.zeros(0, np.int64))
            firsts.append(first)
    order = np.argsort(np.concatenate(firsts), kind="stable") if firsts else np.zeros(0, np.int64)
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order), dtype=np.int64)
    store.place(np.split(position, np.cumsum([len(first) for first in firsts])[:-1]))
    # string session ids are numbered by first appearance (a typed log's by their sorted rank, as one file's are)
    store.ids_are_positions = keys is not None and options.type_col is None
    return {**roles, **({"type": options.type_col} if options.type_col else {})}


def _string_sessions(spilled: list[_Spilled]) -> pa.Array:
    """Every distinct session id of a log of string ids, sorted (a session's key is its rank among them)."""
    uniques = [pc.unique(batch.column("session").cast(pa.large_string())) for entry in spilled if entry.rows for batch in _batches(entry.file)]
    return pc.unique(pa.chunked_array(uniques, type=pa.large_string())).sort()


def _group_partition(table: pa.Table, typed: bool) -> tuple[readers.RawLog, np.ndarray]:
    """One hash partition's rows (in log order) grouped by session: (its sessions' clicks, with carts and orders
    beside them when typed; each session's first row in the log)."""
    rows = np.asarray(table.column("row").combine_chunks())
    session = pl.Series("session", np.asarray(table.column("session").combine_chunks()))
    item = pl.from_arrow(table.column("item").combine_chunks())
    assert isinstance(item, pl.Series)
    ts = np.asarray(table.column("ts").combine_chunks())
    codes = np.asarray(table.column("type").combine_chunks())
    if not typed:
        return readers.group_rows(session, item, ts, rows)
    clicks = codes == 0
    keep = pl.Series(clicks)
    log, first = readers.group_rows(session.filter(keep), item.filter(keep), ts[clicks], rows[clicks])
    other = ~clicks
    return readers.attach_extra(
        log, session.filter(pl.Series(other)).to_numpy(), item=item.filter(pl.Series(other)).to_arrow(), ts=ts[other], types=codes[other]
    ), first
