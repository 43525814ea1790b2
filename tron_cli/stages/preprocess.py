"""The preprocess stage: a raw click log in, a dataset directory (artifact contract v1) out.

Public datasets follow the reference exactly (docs/tron-reference.md): sessions of >= 2 events, items of
>= 5 events, sessions of >= 2 again, a time split, test events of items unknown to train dropped, test
sessions of >= 2, items numbered 1..N, sessions ordered by start. A validation split is then carved from the
end of that train set, so test and train + valid still equal the reference's output.

A user's own log (`--train`: a file, a directory of parts, a glob or a hive-partitioned tree, `datasets.parts`)
is read by its file names' format (readers.infer_format) with its columns recognised by name, and gets a
validation split too unless told otherwise (`own_validation`): the stages choose checkpoints on it. The Python
API hands a log over as a polars table instead: it is read as a one-part log is, named in messages as the train
(or test) table.

Memory is bounded (`--memory-limit`): the reader puts the sessions into blocks on disk (`datasets.blocks`), every
decision is taken on per-session figures (clicks, first and last time) and per-item counts, and each pass over the
events reads one block at a time: reading, item support (when filtered), the items train knows, the test split,
and the last, which sends every session of a split to the row group of its rank by start; each row group is then
sorted and written. The dataset is the one the steps above give on the whole log in memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa

from tron_cli.artifacts.documents import read_json, write_json
from tron_cli.artifacts.files import atomic_directory, check_replaceable, sha256_file
from tron_cli.artifacts.lineage import Extension, Parent, extend, parent_codes, read_parent, resolve
from tron_cli.artifacts.sessions import (
    EXTRA_TYPES,
    ExtraEvents,
    Sessions,
    catalogue_fingerprint,
    evaluation_protocol,
    sessions_table,
    sessions_writer,
    write_items,
)
from tron_cli.choices import CART_NAMES, ORDER_NAMES
from tron_cli.datasets import DATASETS, DatasetSpec, parts, readers, steps
from tron_cli.datasets.blocks import Block, BlockStore, Budget, Catalogue, SpillDirectory, parse_memory_limit
from tron_cli.datasets.tables import TableOptions, read_table_log
from tron_cli.errors import InputFormatError, MissingInputError, TronError, UsageError
from tron_cli.reporting import SILENT, Reporter
from tron_cli.workspace import home

DAY_MS = steps.DAY_MS
OWN_VALID_SPANS = 7  # an own log whose train part spans 7 test spans gives its last test span to validation ...
OWN_VALID_FRACTION = 0.1  # ... a shorter one its last 10 % of train sessions
TABLE_FORMAT = "table"  # the format dataset.json records for a log handed over as a table, not a file
TABLE_NAME = "table"  # the dataset name of a log handed over as a table, unless named


@dataclass
class Options:
    """Everything `tron preprocess` can be told; None means "the preset's (or the default) value"."""

    preset: str | None = None  # a registered dataset's name (tron_cli.datasets.DATASETS)
    input: Path | None = None  # raw file, directory or glob instead of the download
    train: Path | pl.DataFrame | None = None  # a user's own log: a file, a directory of parts, a glob (datasets.parts) or a table (the Python API)
    test: Path | pl.DataFrame | None = None
    format: str = "auto"  # by the file name (readers.infer_format), or one of readers.FORMATS
    session_col: str | None = None  # None: recognised by name (readers.pick_columns)
    item_col: str | None = None
    time_col: str | None = None
    time_unit: str = "auto"
    id_type: str = "auto"  # how a text table's ids are read (readers.id_column): auto, text or number
    separator: str | None = None  # None: sniffed from a text table's header (readers.sniff_separator)
    event_types: tuple[str, ...] = ("clicks",)
    type_col: str | None = None  # a table's event type column: its orders and carts are kept beside the clicks
    order_types: tuple[str, ...] = ORDER_NAMES
    cart_types: tuple[str, ...] = CART_NAMES
    name: str | None = None
    out: Path | None = None
    force: bool = False
    split: str = "time"
    test_days: float | None = None
    valid_days: float | None = None
    valid_fraction: float | None = None
    no_valid: bool = False
    min_session_length: int = 2
    min_item_support: int | None = None
    unknown_test_items: str | None = None  # keep (as misses) or drop; None: drop for the reference's datasets, keep for own logs
    memory_limit: str = "auto"  # a size (4G) or auto: a quarter of the machine's memory (datasets.blocks)
    catalogue_from: Path | None = None  # a dataset, run or bundle whose items keep their dense ids (lineage.extend)


T = TypeVar("T")


@dataclass
class _Source:
    """One log to read (train, or a pre-split test): its parts, and where their checksums come from."""

    log: parts.LogParts
    manifest: dict[str, Any] | None = None  # a download's: its files' checksums are not computed again
    spool: Any = None  # a named pipe's (/dev/stdin's, <(...)'s) content, copied once: a pipe cannot be read twice
    joined: Any = None  # parts for a dataset reader that reads one file: their concatenation
    table: dict[str, Any] | None = None  # a table's record in dataset.json (its Arrow IPC stream's size and sha256)

    @property
    def path(self) -> Path:
        """As given: messages name the log as the user typed it."""
        return self.log.given

    def inputs(self) -> list[Path]:
        """What the log reads: its parts, and the directory that holds them (an output must not overlap either)."""
        if self.table is not None:
            return []
        return [self.log.given, *(part.path for part in self.log.parts)]

    def files(self) -> list[dict[str, Any]]:
        """dataset.json's record of the log: its parts with sizes and checksums (`parts.record`)."""
        if self.table is not None:
            return [self.table]
        if self.spool is not None:
            spooled = Path(self.spool.name)
            return [{"path": str(self.path), "size": spooled.stat().st_size, "sha256": sha256_file(spooled)}]
        return parts.record(self.log, self._checksum)

    def _checksum(self, path: Path) -> tuple[int, str]:
        """(size, sha256), taken from the download's manifest when it lists the file (no rehashing 11 GB)."""
        size = path.stat().st_size
        for entry in (self.manifest or {}).get("files", []):
            if Path(entry["path"]).name == path.name and entry.get("size") == size:
                return size, entry["sha256"]
        return size, sha256_file(path)


def _spool(*paths: Path) -> Any:
    """A temporary copy of a named pipe or character device, or the concatenation of several files (deleted when
    closed, or with the copy's last reference), named with the first one's suffixes so that `.csv.gz` still says
    what it holds. A plain file's last line gets its newline, so that the next file's first line stays its own."""
    spool = tempfile.NamedTemporaryFile(prefix=".tron-input.", suffix="".join(paths[0].suffixes[-2:]))
    for path in paths:
        with open(path, "rb") as stream:
            shutil.copyfileobj(stream, spool, 1 << 20)
        if len(paths) > 1 and readers.compression_of(path) is None and path.stat().st_size:
            with open(path, "rb") as stream:
                stream.seek(-1, os.SEEK_END)
                if stream.read(1) != b"\n":
                    spool.write(b"\n")
    spool.flush()
    return spool


class _Digest(io.RawIOBase):
    """A sink that keeps only the SHA-256 and the size of what is written to it."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


def _table_source(role: str, table: pl.DataFrame) -> _Source:
    """A table handed over in memory: one part named `role` table in messages, recorded with the checksum of its
    Arrow IPC stream."""
    digest = _Digest()
    arrow = table.to_arrow()
    with pa.ipc.new_stream(digest, arrow.schema) as writer:
        writer.write_table(arrow)
    named = Path(f"{role} table")
    record = {"path": str(named), "size": digest.size, "sha256": digest.sha256.hexdigest()}
    return _Source(parts.LogParts(named, [parts.Part(named, frame=table)], TABLE_FORMAT), table=record)


def _input_source(given: Path | pl.DataFrame, role: str) -> _Source:
    """--train or --test: a file, parts of one, or a table."""
    return _table_source(role, given) if isinstance(given, pl.DataFrame) else _source(given, f"--{role}")


def _source(path: Path, flag: str, manifest: dict[str, Any] | None = None) -> _Source:
    """A log as given: a named pipe is copied once; anything else is resolved into its parts."""
    path = Path(path)
    if path.exists() and not path.is_dir() and not path.is_file():  # a named pipe, /dev/stdin, <(...)
        spool = _spool(path)
        return _Source(parts.LogParts(path, [parts.Part(Path(spool.name))], "file"), spool=spool)
    return _Source(parts.resolve(path, flag), manifest)


def _resolve(options: Options) -> tuple[str, DatasetSpec | None, list[_Source]]:
    """(dataset name, its declaration or None for own logs, sources [train, test?])."""
    if options.train is not None:
        if options.preset is not None:
            raise UsageError(f"give either a dataset NAME ({options.preset}) or --train FILE, not both")
        if options.input is not None:
            raise UsageError("--input is for the public datasets; with your own logs use --train and --test")
        sources = [_input_source(options.train, "train")] + ([_input_source(options.test, "test")] if options.test is not None else [])
        name = options.name or (TABLE_NAME if isinstance(options.train, pl.DataFrame) else readers.log_name(options.train))
        return name, None, sources
    if options.test is not None:
        raise UsageError("--test needs --train")
    manifest = None
    if options.preset is None:
        raw_dir = home.latest_download()
        manifest = read_json(raw_dir / "manifest.json", "manifest")
        preset_name = str(manifest.get("name"))
    else:
        preset_name = options.preset
        raw_dir = home.raw_root() / preset_name
    if preset_name not in DATASETS:
        raise UsageError(f"unknown dataset {preset_name!r}", f"Use one of: {', '.join(DATASETS.names())}, or --train FILE for your own log")
    spec = DATASETS.get(preset_name)
    preset = spec.preset
    names = [preset.train_file] + ([preset.test_file] if preset.test_file else [])
    if options.input is not None:
        raw_dir = Path(options.input)
        if not raw_dir.is_dir() or not (raw_dir / preset.train_file).is_file():
            if preset.test_file:
                if not raw_dir.exists():
                    raise MissingInputError(f"--input {raw_dir} does not exist")
                raise UsageError(f"{preset_name} comes as two files ({', '.join(names)}): give --input the directory that holds them")
            source = _source(raw_dir, "--input")
            if len(source.log.parts) > 1 and spec.format != "otto-jsonl":  # its reader groups one file's rows by session
                source.joined = _spool(*(part.path for part in source.log.parts))
            return options.name or preset_name, spec, [source]
    elif manifest is None:
        if not (raw_dir / "manifest.json").is_file():
            raise MissingInputError(
                f"{preset_name} is not downloaded ({raw_dir} has no manifest.json)", f"Run first: tron download {preset_name}, or pass --input PATH"
            )
        manifest = read_json(raw_dir / "manifest.json", "manifest")
    paths = [raw_dir / name for name in names]
    for path in paths:
        if not path.is_file():
            raise MissingInputError(f"{path} not found", f"Download it with tron download {preset_name}, or point --input at the file or its directory")
    return options.name or preset_name, spec, [_Source(parts.LogParts(path, [parts.Part(path)], "file"), manifest) for path in paths]


def _check_values(options: Options, name: str) -> None:
    """Refuse option values that make no sense (usage errors naming the option), and a dataset name that is not one
    plain directory name under $TRON_HOME/data (`../../x` would write elsewhere, `.x` would be hidden from later stages)."""
    if options.separator is not None and len(options.separator) != 1:
        raise UsageError(f"--separator must be one character, not {options.separator!r}", "Give , or ; or | (or a tab), or leave it out to sniff it")
    for flag, days in (("--test-days", options.test_days), ("--valid-days", options.valid_days)):
        if days is not None and not (0 < days < math.inf):
            raise UsageError(f"{flag} must be a positive number of days, not {days}")
    if options.out is None and (not name or name in (".", "..") or name.startswith(".") or any(sep in name for sep in ("/", "\\", os.sep))):
        raise UsageError(f"dataset name {name!r} is not a plain name: it must not hold a path separator or start with '.'", "Pass --name NAME, or --out DIR")


def _named(source: _Source, work: Callable[[], T]) -> T:
    """`work()`, whose errors name a spooled pipe or concatenated parts by the path the user gave."""
    try:
        return work()
    except TronError as error:
        for copy in (source.spool, source.joined):
            if copy is not None:
                error.message = error.message.replace(copy.name, f"{source.path} (its parts one after another)" if copy is source.joined else str(source.path))
                error.args = (error.line(),)
        raise


def _format(source: _Source, options: Options) -> str:
    """The format of an own log's parts: given, or by their names, which must then agree."""
    if source.table is not None:
        if options.format != "auto":
            raise UsageError(f"--format {options.format} says how to read a file, and the train log is a table", "Leave --format out")
        return TABLE_FORMAT
    if options.format != "auto":
        return options.format
    found = _named(source, lambda: readers.infer_format(source.log.parts[0].path))
    for part in source.log.parts[1:]:
        other = (
            readers.infer_format(part.path) if found != "otto-jsonl" else "otto-jsonl" if readers.infer_format(part.path) in ("jsonl", "otto-jsonl") else "?"
        )
        if other != found:
            raise InputFormatError(f"{part.path} is {other}, but {source.log.parts[0].path} is {found}", "Give parts of one format, or pick it with --format")
    return found


def _read_source(
    source: _Source, store: BlockStore, *, spec: DatasetSpec | None, reader: str, options: Options, budget: Budget, report: Reporter
) -> dict[str, str] | None:
    """Read a log into `store`; returns a table's columns of each role (None for session formats)."""
    if spec is None and (reader in readers.FORMATS or reader == TABLE_FORMAT) and reader != "otto-jsonl":
        table = TableOptions(
            session_col=options.session_col,
            item_col=options.item_col,
            time_col=options.time_col,
            time_unit=options.time_unit,
            id_type=options.id_type,
            separator=options.separator,
            type_col=options.type_col,
            order_types=options.order_types,
            cart_types=options.cart_types,
        )
        return _named(source, lambda: read_table_log(source.log, reader, table, store=store, budget=budget, report=report))
    read = spec.read if spec is not None else readers.read_otto_jsonl
    paths = [Path(source.joined.name)] if source.joined is not None else [part.path for part in source.log.parts]

    def read_parts() -> None:
        for path in paths:
            result: readers.RawLog | Iterable[readers.RawLog] = read(path, options.event_types, report)
            for block in [result] if isinstance(result, readers.RawLog) else result:  # a dataset's reader may give the whole log at once
                store.add(block)

    _named(source, read_parts)
    return None


@dataclass
class _View:
    """A split as a selection from a log's blocks: which sessions, which of their clicks (items `keep`, then the
    first `head` of them), and the figures of what is selected (clicks, first click time) per session."""

    store: BlockStore
    member: np.ndarray  # (S,) bool
    clicks: np.ndarray  # (S,) clicks of each session in the split
    first: np.ndarray  # (S,) time of its first click there
    keep: np.ndarray | None = None  # (codes,) bool: only clicks of these items
    head: np.ndarray | None = None  # (S,): only the first head[s] clicks kept
    rank: np.ndarray | None = None  # (S,): each member's place by start, once known

    @property
    def sessions(self) -> int:
        return int(self.member.sum())

    @property
    def events(self) -> int:
        return int(self.clicks[self.member].sum())

    def take(self, block: Block, sessions: Sessions) -> tuple[np.ndarray, Sessions]:
        """(positions, sessions) of this split in a block (`sessions`: the block coded)."""
        mask = self.member[block.positions]
        positions = block.positions[mask]
        sessions = sessions.select(mask)
        if self.keep is not None:
            sessions = steps.keep_events(sessions, self.keep[sessions.items])
        if self.head is not None:
            sessions = steps.head(sessions, self.head[positions])
        return positions, sessions


def _coded(block: Block, catalogue: Catalogue) -> Sessions:
    """A block's sessions with item codes instead of raw ids."""
    log = block.log
    extra = None if log.extra is None else ExtraEvents(log.extra.offsets, catalogue.codes(log.extra.item), log.extra.ts, log.extra.types)
    return Sessions(log.session, log.offsets, items=catalogue.codes(log.item), ts=log.ts, extra=extra)


def _refigure(store: BlockStore, catalogue: Catalogue, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clicks, first, last time) per session once only clicks of `keep` items stay (a pass over the blocks)."""
    clicks, first, last = (np.zeros(store.n_sessions, np.int64) for _ in range(3))
    for block in store:
        sessions = _coded(block, catalogue)
        kept = steps.keep_events(sessions, keep[sessions.items])
        clicks[block.positions], first[block.positions], last[block.positions] = steps.figures(kept.offsets, kept.ts)
    return clicks, first, last


def _step(history: list[dict[str, Any]], step: str, sessions: int, events: int) -> None:
    history.append({"step": step, "sessions": int(sessions), "events": int(events)})


def preprocess(options: Options, report: Reporter = SILENT) -> dict[str, Any]:
    """Run the stage; returns the summary that `--json` prints (dataset path, n_items, counts per split)."""
    name, spec, sources = _resolve(options)
    if spec is None and options.format not in readers.FORMATS:
        raise UsageError(f"unknown format {options.format!r}", f"Use one of: {', '.join(readers.FORMATS)}")
    reader = spec.format if spec else _format(sources[0], options)
    if options.split not in ("time", "last"):
        raise UsageError(f"unknown split {options.split!r}", "Use --split time or --split last")
    if options.min_session_length < 1:
        raise UsageError("--min-session-length must be at least 1")
    if options.valid_fraction is not None and not 0 < options.valid_fraction < 1:
        raise UsageError("--valid-fraction must be between 0 and 1")
    if sum(x is not None for x in (options.valid_days, options.valid_fraction)) + options.no_valid > 1:
        raise UsageError("give at most one of --valid-days, --valid-fraction and --no-valid")
    budget = Budget(parse_memory_limit(options.memory_limit))
    _check_values(options, name)
    out = Path(options.out) if options.out else home.datasets_root() / name
    if out.exists() and not options.force:
        raise UsageError(f"{out} exists already", "Pass --force to replace it, or --name to write another dataset")
    parent_path = None
    if options.catalogue_from is not None:
        roots = {"dataset": home.datasets_root(), "bundle": home.bundles_root(), "run": home.runs_root()}  # a name: the dataset first
        parent_path = resolve(options.catalogue_from, roots, "--catalogue-from")
    inputs = [path for source in sources for path in source.inputs()] + ([parent_path] if parent_path is not None else [])
    check_replaceable(out, "dataset", inputs=tuple(inputs))
    parent = None if parent_path is None else read_parent(parent_path)
    with SpillDirectory() as spill:
        return _preprocess(
            options, name=name, spec=spec, sources=sources, reader=reader, out=out, parent=parent, budget=budget, spill=spill.path, report=report
        )


def _preprocess(
    options: Options,
    *,
    name: str,
    spec: DatasetSpec | None,
    sources: list[_Source],
    reader: str,
    out: Path,
    parent: Parent | None,
    budget: Budget,
    spill: Path,
    report: Reporter,
) -> dict[str, Any]:
    preset = spec.preset if spec else None
    min_length = options.min_session_length
    min_support = options.min_item_support if options.min_item_support is not None else (preset.min_item_support if preset else 1)
    catalogue = Catalogue()
    stores = [BlockStore(spill, role, catalogue) for role in ("train", "test")[: len(sources)]]
    columns = None
    for index, (source, store) in enumerate(zip(sources, stores)):
        found = _read_source(
            source, store, spec=spec, reader=_format(source, options) if spec is None and index else reader, options=options, budget=budget, report=report
        )
        columns = columns or found
    notes: list[tuple[Callable[[str], None], str]] = []  # said once the dataset is written: a refusal stays one line
    recognised = [role for role in readers.ROLES if getattr(options, f"{role}_col") is None]
    if columns is not None and recognised:
        picked = ", ".join(f"{columns[role]} ({role})" for role in readers.ROLES)
        notes.append((report.info, f"{sources[0].path.name}: columns {picked}; {', '.join(readers.FLAGS[role] for role in recognised)} pick others"))
    train_store = stores[0]
    clicks, first, last = train_store.figures()
    if not clicks.sum():
        raise InputFormatError(f"{sources[0].path} has no events of types {', '.join(options.event_types)}")
    uniques = catalogue.finish()
    n_codes = len(uniques)
    history: list[dict[str, Any]] = []
    pre_split = len(sources) == 2
    split_on = preset.split_on if preset else "first"
    floor = preset.floor_to_day if preset else False

    _step(history, "read train" if pre_split else "read", len(clicks), clicks.sum())
    notes += [(report.warn, note) for note in implausible_times(train_store, last, time_unit=options.time_unit if spec is None else "ms")]
    alive = clicks >= min_length
    _step(history, f"sessions with >= {min_length} events", alive.sum(), clicks[alive].sum())
    keep = None
    if min_support > 1:
        support = np.zeros(n_codes, dtype=np.int64)
        for block in train_store:
            _, sessions = _View(train_store, alive, clicks, first).take(block, _coded(block, catalogue))
            support += np.bincount(sessions.items, minlength=n_codes)
        keep = support >= min_support
        clicks, first, last = _refigure(train_store, catalogue, keep)
        _step(history, f"items with >= {min_support} events", alive.sum(), clicks[alive].sum())
        alive &= clicks >= min_length
        _step(history, f"sessions with >= {min_length} events", alive.sum(), clicks[alive].sum())
    if not alive.any():
        raise InputFormatError(
            f"{sources[0].path}: no session is left after filtering (sessions >= {min_length} events, items >= {min_support} events)",
            "Lower --min-session-length or --min-item-support",
        )
    moment = first if split_on == "first" else last

    train = _View(train_store, alive, clicks, first, keep=keep)
    valid: _View | None = None
    targets = "all"
    if pre_split:
        test_clicks, test_first, _ = stores[1].figures()
        _step(history, "read test", len(test_clicks), test_clicks.sum())
        test = _View(stores[1], test_clicks >= min_length, test_clicks, test_first)
    elif options.split == "last":
        long = alive & (clicks >= 3)
        targets = "last"
        # --no-valid trains on the item before the test one too: the refit on train + validation once the settings
        # (the epoch count among them) have been chosen on a dataset with validation
        held_out = 1 if options.no_valid else 2
        head = np.where(long, clicks - held_out, clicks)
        train = _View(train_store, alive, head, first, keep=keep, head=head)
        valid = None if options.no_valid else _View(train_store, long, clicks - 1, first, keep=keep, head=clicks - 1)
        test = _View(train_store, long, clicks, first, keep=keep)
        _step(history, "leave-one-out train", train.sessions, train.events)
    else:
        test_days = options.test_days if options.test_days is not None else (preset.test_days if preset and preset.test_days is not None else 1.0)
        after = alive & (moment >= steps.time_cut(first[alive], test_days * DAY_MS, floor))
        train = _View(train_store, alive & ~after, clicks, first, keep=keep)
        test = _View(train_store, after, clicks, first, keep=keep)
        _step(history, f"time split: train ({test_days:g} days before the latest start)", train.sessions, train.events)
        _step(history, "time split: test", test.sessions, test.events)
        notes += [(report.warn, note) for note in thin_test_split(first[train.member], first[test.member], test_days)]
        if train.sessions == 0:
            raise InputFormatError(
                f"{sources[0].path}: the time split leaves no train session (every session starts within {test_days:g} days of the latest)", "Lower --test-days"
            )

    valid_days, valid_fraction = options.valid_days, options.valid_fraction
    if valid is None and not options.no_valid:
        if valid_days is None and valid_fraction is None:
            if preset is not None:
                valid_days = preset.valid_days
            else:
                span = options.test_days if options.test_days is not None and not pre_split else 1.0
                valid_days, valid_fraction = own_validation(first[train.member], span)
        whole = train
        later = np.zeros(len(train.member), dtype=bool)
        if valid_days is not None:
            later = train.member & (moment >= steps.time_cut(first[train.member], valid_days * DAY_MS, floor))
        elif valid_fraction is not None:
            members = np.flatnonzero(train.member)
            later[members[steps.last_fraction(first[members], valid_fraction)]] = True
        train = _View(train_store, whole.member & ~later, clicks, first, keep=keep)
        valid = _View(train_store, later, clicks, first, keep=keep)
        _step(history, "validation carved from train", valid.sessions, valid.events)
        if train.sessions == 0 or valid.sessions == 0:
            told = options.valid_days is not None or options.valid_fraction is not None
            if told or preset is not None:
                raise InputFormatError(
                    f"the validation split leaves {train.sessions} train and {valid.sessions} validation sessions",
                    "Change --valid-days / --valid-fraction, or pass --no-valid",
                )
            notes.append((report.warn, f"{whole.sessions} train sessions are too few to carve a validation split: training will keep its last epoch"))
            train, valid, valid_days, valid_fraction = whole, None, None, None
            history.pop()
        elif spec is None and options.valid_days is None and options.valid_fraction is None:
            chosen = f"the last {valid_days:g} day{'s' if valid_days != 1 else ''}" if valid_days is not None else f"the last {valid_fraction:.0%}"
            notes.append(
                (
                    report.info,
                    f"validation: {chosen} of train, {valid.sessions:,} sessions (training keeps its best epoch on it; --valid-days, --valid-fraction or --no-valid change it)",
                )
            )

    known = np.zeros(n_codes, dtype=bool)
    train_counts = np.zeros(n_codes, dtype=np.int64)
    with report.task("the items train knows", total=len(train_store.files)) as task:
        for block in train_store:
            sessions = _coded(block, catalogue)
            _, kept = train.take(block, sessions)
            known[kept.items] = True
            train_counts += np.bincount(kept.items, minlength=n_codes)
            if valid is not None:
                known[valid.take(block, sessions)[1].items] = True
            task.update(advance=1)
    known_today = known.copy()
    in_parent = None
    if parent is not None:  # the parent's items were trained on before: known, whether or not they occur today
        in_parent = parent_codes(parent, uniques, str(sources[0].path))
        known |= in_parent
    # the reference's datasets drop them, as its numbers were made; everything else keeps them, as misses
    unknown_policy = options.unknown_test_items or ("drop" if spec is not None else "keep")
    if unknown_policy not in ("drop", "keep"):
        raise UsageError(f"--unknown-test-items must be drop or keep, not {unknown_policy!r}")
    unknown, seen_in_test, known_clicks, known_first, last_known = _test_pass(test, catalogue, known, targets)
    unknown["policy"] = unknown_policy
    if unknown_policy == "keep":
        catalogue_mask = known | seen_in_test
    else:
        catalogue_mask = known
        if targets == "last":
            test.member = test.member & last_known
        else:
            test = _View(
                test.store, test.member & (known_clicks >= min_length), known_clicks, known_first, keep=known if test.keep is None else known & test.keep
            )
        _step(history, "test without items unknown to train", test.sessions, test.events)
    if test.sessions == 0:
        raise InputFormatError("no test session is left", "Check the split (--test-days, --test) and the filters")

    extension: Extension | None = None
    if parent is None:
        dense_of_code = np.cumsum(catalogue_mask).astype(np.int32) * catalogue_mask  # code -> 1..N, 0 when not in the catalogue
        counts = train_counts[catalogue_mask]
        raw_ids = uniques.take(pa.array(np.flatnonzero(catalogue_mask)))
    else:
        assert in_parent is not None
        extension = extend(parent, uniques, catalogue=catalogue_mask, in_parent=in_parent)
        dense_of_code, raw_ids = extension.dense_of_code, extension.ids
        counts = np.zeros(len(raw_ids), dtype=np.int64)  # the parent's items absent today: 0 train clicks today
        counts[dense_of_code[catalogue_mask] - 1] = train_counts[catalogue_mask]
        lineage = extension.record(parent, present=known_today | (seen_in_test & catalogue_mask))
    views = {key: view for key, view in (("train", train), ("valid", valid), ("test", test)) if view is not None}
    extras = _route(views, stores, catalogue, dense_of_code, budget=budget, spill=spill, report=report)
    summary_counts = {key: {**_counts(view, targets), **extras[key]} for key, view in views.items()}
    extra_types = [kind for kind in EXTRA_TYPES if any(counts_of.get(kind) for counts_of in extras.values())]
    for key in summary_counts:
        if not any(summary_counts[key].get(kind) for kind in EXTRA_TYPES):
            for kind in EXTRA_TYPES:
                summary_counts[key].pop(kind, None)
    info = {
        "name": name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"preset": spec.name if spec else None, "format": reader, "files": [entry for source in sources for entry in source.files()]},
        "parameters": {
            "split": "files" if pre_split else options.split,
            "test_days": None
            if pre_split or options.split == "last"
            else (options.test_days if options.test_days is not None else (preset.test_days if preset else 1.0)),
            "split_on": split_on,
            "valid": "leave-one-out"
            if targets == "last"
            else (None if "valid" not in views else (f"{valid_fraction} of train sessions" if valid_fraction is not None else "days")),
            "valid_days": valid_days if targets != "last" and "valid" in views else None,
            "columns": columns,
            "min_session_length": min_length,
            "min_item_support": min_support,
            "event_types": list(options.event_types) if reader == "otto-jsonl" else ["clicks"],
            "unknown_test_items": unknown_policy,
        },
        "unknown_test_targets": unknown,
        "n_items": len(raw_ids),
        "item_id_type": str(uniques.type),
        "catalogue_sha256": catalogue_fingerprint(raw_ids),
        "targets": targets,
        # leave-one-out data is validated and evaluated as its test is scored; a time split's dataset.json stays as
        # it was (its digest too), its protocol being the default by its targets
        **({"evaluation": evaluation_protocol(targets)} if targets == "last" else {}),
        "splits": list(views),
        "extra_types": extra_types,
        "counts": summary_counts,
        "steps": history,
        **({} if extension is None else {"catalogue_from": lineage}),
    }
    with atomic_directory(out, force=options.force) as tmp:
        for key in views:
            with sessions_writer(tmp / f"{key}.parquet") as write:
                for bucket in sorted(spill.glob(f"{key}-rows-*.arrow")):
                    with pa.OSFile(str(bucket), "rb") as handle:
                        table = pa.ipc.open_file(handle).read_all()
                    bucket.unlink()
                    ranks = np.asarray(table.column("rank").combine_chunks())
                    if (np.diff(ranks) < 0).any():  # a log in start order (OTTO's) comes in order already
                        table = table.take(pa.array(np.argsort(ranks, kind="stable")))
                    write(table.drop_columns(["rank"]))
        write_items(tmp / "items.parquet", raw_ids, counts)
        write_json(tmp / "dataset.json", info, kind="dataset")
    for say, note in notes:
        say(note)
    summary = {"dataset": str(out.resolve()), "name": name, "n_items": info["n_items"], "targets": targets, "unknown_test_targets": unknown}
    return {**summary, **summary_counts, **({} if extension is None else {"catalogue_from": lineage})}


def _test_pass(test: _View, catalogue: Catalogue, known: np.ndarray, targets: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One pass over the test split: (its targets whose item train never saw, counted before any is dropped; the
    items it holds; per session the clicks and first click time of known items, and whether its last click is one)."""
    seen = np.zeros(len(known), dtype=bool)
    n_sessions = len(test.member)
    known_clicks, known_first = np.zeros(n_sessions, np.int64), np.zeros(n_sessions, np.int64)
    last_known = np.zeros(n_sessions, dtype=bool)
    count = n_targets = 0
    for block in test.store:
        positions, sessions = test.take(block, _coded(block, catalogue))
        if not len(positions):
            continue
        seen[sessions.items] = True
        is_known = known[sessions.items]
        if targets == "last":
            n_targets += len(positions)
            last_known[positions] = is_known[sessions.offsets[1:] - 1]
            count += int((~last_known[positions]).sum())
        else:
            is_target = np.ones(sessions.n_events, dtype=bool)
            is_target[sessions.offsets[:-1][sessions.offsets[:-1] < sessions.n_events]] = False  # a session's first click is no target
            n_targets += int(is_target.sum())
            count += int((~is_known & is_target).sum())
            kept = steps.keep_events(sessions, is_known)
            known_clicks[positions], known_first[positions], _ = steps.figures(kept.offsets, kept.ts)
    return {"count": count, "fraction": count / n_targets if n_targets else 0.0, "of_targets": n_targets}, seen, known_clicks, known_first, last_known


def _route(
    views: dict[str, _View], stores: list[BlockStore], catalogue: Catalogue, dense_of_code: np.ndarray, *, budget: Budget, spill: Path, report: Reporter
) -> dict[str, dict[str, int]]:
    """The last pass over the blocks: each split's sessions, with dense ids, go to the row group of their rank by
    start (a file per row group); returns each split's carts and orders. A block is deleted once routed."""
    size = budget.row_group_sessions
    for view in views.values():
        view.rank = np.full(len(view.member), -1, dtype=np.int64)
        members = np.flatnonzero(view.member)
        view.rank[members] = steps.start_ranks(view.first[members])
    extras = {key: dict.fromkeys(EXTRA_TYPES, 0) for key in views}
    writers: dict[tuple[str, int], Any] = {}
    try:
        with report.task("writing the splits", total=sum(len(store.files) for store in stores)) as task:
            for store in stores:
                for index in range(len(store.files)):
                    block = store.read(index)
                    sessions = _coded(block, catalogue)
                    for key, view in views.items():
                        if view.store is not store:
                            continue
                        positions, taken = view.take(block, sessions)
                        if not len(positions):
                            continue
                        dense = steps.to_dense(taken, dense_of_code)
                        if dense.extra is not None:
                            for kind, code in EXTRA_TYPES.items():
                                extras[key][kind] += dense.extra.count(code)
                        assert view.rank is not None
                        ranks = view.rank[positions]
                        table = sessions_table(dense).append_column("rank", pa.array(ranks))
                        group = ranks // size
                        numbers = np.unique(group).tolist()
                        for number in numbers:
                            # a block's ranks are in no order: only a block of one group goes whole
                            piece = table if len(numbers) == 1 else table.filter(pa.array(group == number))
                            if (key, number) not in writers:
                                sink = pa.OSFile(str(spill / f"{key}-rows-{number:06d}.arrow"), "wb")
                                writers[key, number] = pa.ipc.new_file(sink, piece.schema)
                            writers[key, number].write_table(piece)
                    store.drop(index)
                    task.update(advance=1)
    finally:
        for writer in writers.values():
            writer.close()
    return extras


def _counts(view: _View, targets: str) -> dict[str, int]:
    """Sessions, clicks and targets of a split."""
    sessions, events = view.sessions, view.events
    return {"sessions": sessions, "events": events, "targets": events - sessions if targets == "all" else sessions}


LATEST_PLAUSIBLE_YEAR = 2100  # a log's time after this is a unit read wrongly (ms as s) or an outlier
THIN_TEST = (10, 0.01)  # a time split's test under this many sessions and this share of them is worth a warning


def implausible_times(store: BlockStore, last: np.ndarray, time_unit: str) -> list[str]:
    """A warning, with the numbers, when the log's times run past `LATEST_PLAUSIBLE_YEAR` as read with `time_unit`
    (`last`: each session's last click time; the late clicks are counted in a pass over the blocks only then)."""
    limit = int(dt.datetime(LATEST_PLAUSIBLE_YEAR, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    latest = int(last.max()) if len(last) else 0
    if latest < limit:
        return []
    late = total = 0
    for block in store:
        late += int((block.log.ts >= limit).sum())
        total += len(block.log.ts)
    year = 1970 + latest / (365.2425 * DAY_MS)
    return [
        f"the log's times run to the year {year:,.0f} as read with --time-unit {time_unit} ({late:,} of {total:,} events after "
        f"{LATEST_PLAUSIBLE_YEAR}): check the unit (s, ms, us, ns: --time-unit) or the log for outliers"
    ]


def thin_test_split(train_starts: np.ndarray, test_starts: np.ndarray, test_days: float) -> list[str]:
    """A warning, with the numbers, when the time split's test holds a tiny share of the sessions: the latest
    session starts far after the others (an outlier time), so the last --test-days hold almost nothing."""
    total = len(train_starts) + len(test_starts)
    if not len(test_starts) or len(test_starts) >= THIN_TEST[0] or len(test_starts) >= THIN_TEST[1] * total:
        return []
    latest, before = int(test_starts.max()), int(train_starts.max()) if len(train_starts) else None
    gap = "" if before is None else f", {(latest - before) / DAY_MS:,.1f} days after the latest train session's"
    try:
        when = dt.datetime.fromtimestamp(latest / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    except (ValueError, OverflowError):  # past the year 9999
        when = f"the year {1970 + latest / (365.2425 * DAY_MS):,.0f}"
    return [
        f"the test split holds {len(test_starts):,} of {total:,} sessions ({100 * len(test_starts) / total:.2g}%): the last {test_days:g} days before the latest "
        f"session start ({when}{gap}); an outlier time does this. Check the log's times, or set --test-days"
    ]


def own_validation(train_starts: np.ndarray, test_span_days: float) -> tuple[float | None, float | None]:
    """(valid days, valid fraction) for a user's own log, one of them None: the test split's span again, taken
    from the end of train, when train spans at least `OWN_VALID_SPANS` of them; else the last tenth of train."""
    span_days = float(train_starts.max() - train_starts.min()) / DAY_MS if len(train_starts) else 0.0
    if span_days >= OWN_VALID_SPANS * test_span_days:
        return test_span_days, None
    return None, OWN_VALID_FRACTION
