"""The preprocess stage: a raw click log in, a dataset directory (artifact contract v1) out.

Public datasets follow the reference exactly (docs/tron-reference.md): sessions of >= 2 events, items of
>= 5 events, sessions of >= 2 again, a time split, test events of items unknown to train dropped, test
sessions of >= 2, items numbered 1..N, sessions ordered by start. A validation split is then carved from the
end of that train set, so test and train + valid still equal the reference's output.

A user's own log (`--train`) is read by its file name's format (readers.infer_format) with its columns
recognised by name, and gets a validation split too unless told otherwise (`own_validation`): the stages
choose checkpoints on it. The Python API hands a log over as a polars table instead of a file: it is read the
same way, named in messages as the train (or test) table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa

from tron_cli.artifacts.documents import read_json, write_json
from tron_cli.artifacts.files import atomic_directory, check_replaceable, sha256_file
from tron_cli.artifacts.sessions import EXTRA_TYPES, ExtraEvents, Sessions, catalogue_fingerprint, write_items, write_sessions
from tron_cli.choices import CART_NAMES, ORDER_NAMES
from tron_cli.datasets import DATASETS, DatasetSpec, readers, steps
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
    input: Path | None = None  # raw file or directory instead of the download
    train: Path | pl.DataFrame | None = None  # a user's own log: a file, or a table (the Python API)
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


T = TypeVar("T")


@dataclass
class _Source:
    path: Path  # as given: messages name the file as the user typed it
    sha256: str
    size: int
    spool: Any = None  # a named pipe's (/dev/stdin's, <(...)'s) content, copied once: a pipe cannot be read twice
    table: pl.DataFrame | None = None  # a log handed over as a table; `path` then names it in messages


def _readable(source: _Source) -> Path:
    """Where a source's bytes are read from: the file itself, or its spooled copy."""
    return Path(source.spool.name) if source.spool is not None else source.path


def _spool(path: Path) -> Any:
    """A temporary copy of a named pipe or character device (deleted when closed, or with the copy's last reference),
    named with the pipe's suffixes so that `.csv.gz` still says what it holds."""
    spool = tempfile.NamedTemporaryFile(prefix=".tron-input.", suffix="".join(path.suffixes[-2:]))
    with open(path, "rb") as stream:
        shutil.copyfileobj(stream, spool, 1 << 20)
    spool.flush()
    return spool


def _describe(step: str, sessions: Sessions, log: list[dict[str, Any]]) -> None:
    log.append({"step": step, "sessions": len(sessions), "events": sessions.n_events})


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
    """A table handed over in memory, named `role` table in messages, with the checksum of its Arrow IPC stream."""
    digest = _Digest()
    arrow = table.to_arrow()
    with pa.ipc.new_stream(digest, arrow.schema) as writer:
        writer.write_table(arrow)
    return _Source(Path(f"{role} table"), digest.sha256.hexdigest(), digest.size, table=table)


def _input_source(role: str, given: Path | pl.DataFrame) -> _Source:
    """--train or --test: a file, or a table."""
    return _table_source(role, given) if isinstance(given, pl.DataFrame) else _source(given, None)


def _source(path: Path, manifest: dict[str, Any] | None) -> _Source:
    """A raw file with its checksum, taken from the download's manifest when it is there (no rehashing 11 GB)."""
    path = Path(path)
    if path.exists() and not path.is_dir() and not path.is_file():  # a named pipe, /dev/stdin, <(...)
        spool = _spool(path)
        return _Source(path, sha256_file(Path(spool.name)), Path(spool.name).stat().st_size, spool)
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist", "Check the path given to --train or --test")
    if manifest is not None:
        for entry in manifest.get("files", []):
            if Path(entry["path"]).name == path.name and entry.get("size") == path.stat().st_size:
                return _Source(path, entry["sha256"], entry["size"])
    return _Source(path, sha256_file(path), path.stat().st_size)


def _resolve(options: Options) -> tuple[str, DatasetSpec | None, list[_Source]]:
    """(dataset name, its declaration or None for own logs, source files [train, test?])."""
    if options.train is not None:
        if options.preset is not None:
            raise UsageError(f"give either a dataset NAME ({options.preset}) or --train FILE, not both")
        if options.input is not None:
            raise UsageError("--input is for the public datasets; with your own logs use --train and --test")
        files = [("train", options.train)] + ([("test", options.test)] if options.test is not None else [])
        name = options.name or (TABLE_NAME if isinstance(options.train, pl.DataFrame) else readers.log_name(options.train))
        return name, None, [_input_source(role, given) for role, given in files]
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
    if options.input is not None:
        raw_dir = Path(options.input)
        if not raw_dir.exists():
            raise MissingInputError(f"--input {raw_dir} does not exist")
    elif manifest is None:
        if not (raw_dir / "manifest.json").is_file():
            raise MissingInputError(
                f"{preset_name} is not downloaded ({raw_dir} has no manifest.json)", f"Run first: tron download {preset_name}, or pass --input PATH"
            )
        manifest = read_json(raw_dir / "manifest.json", "manifest")
    names = [preset.train_file] + ([preset.test_file] if preset.test_file else [])
    if raw_dir.is_file():
        if preset.test_file:
            raise UsageError(f"{preset_name} comes as two files ({', '.join(names)}): give --input the directory that holds them")
        paths = [raw_dir]
    else:
        paths = [raw_dir / name for name in names]
        for path in paths:
            if not path.is_file():
                raise MissingInputError(f"{path} not found", f"Download it with tron download {preset_name}, or point --input at the file or its directory")
    return options.name or preset_name, spec, [_source(p, manifest) for p in paths]


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
    """`work()`, whose errors name a spooled pipe by the path the user gave."""
    try:
        return work()
    except TronError as error:
        if source.spool is not None:
            error.message = error.message.replace(source.spool.name, str(source.path))
            error.args = (error.line(),)
        raise


def _read_source(source: _Source, spec: DatasetSpec | None, options: Options, report: Reporter) -> readers.RawLog:
    if source.table is not None:
        return readers.table_log(
            source.path,
            source.table,
            session_col=options.session_col,
            item_col=options.item_col,
            time_col=options.time_col,
            time_unit=options.time_unit,
            type_col=options.type_col,
            order_types=options.order_types,
            cart_types=options.cart_types,
            id_type=options.id_type,
        )
    return _named(source, lambda: _read(_readable(source), spec, options, report))


def _read(path: Path, spec: DatasetSpec | None, options: Options, report: Reporter) -> readers.RawLog:
    if spec is not None:
        return spec.read(path, options.event_types, report)
    return readers.read_log(
        path,
        options.format,
        session_col=options.session_col,
        item_col=options.item_col,
        time_col=options.time_col,
        time_unit=options.time_unit,
        id_type=options.id_type,
        event_types=options.event_types,
        separator=options.separator,
        type_col=options.type_col,
        order_types=options.order_types,
        cart_types=options.cart_types,
        report=report,
    )


def _shared_codes(raws: list[readers.RawLog]) -> tuple[list[Sessions], pa.Array]:
    """Factorise the items of several files (clicks and other events) together, so that codes mean the same
    item in each."""
    extras = [raw.extra for raw in raws if raw.extra is not None]
    codes, uniques = steps.factorize([raw.item for raw in raws] + [extra.item for extra in extras])
    extra_codes = iter(codes[len(raws) :])
    out = []
    for raw, part in zip(raws, codes):
        extra = None if raw.extra is None else ExtraEvents(raw.extra.offsets, next(extra_codes), raw.extra.ts, raw.extra.types)
        out.append(steps.sort_events(Sessions(raw.session, raw.offsets, items=part, ts=raw.ts, extra=extra)))
    return out, uniques


def preprocess(options: Options, report: Reporter = SILENT) -> dict[str, Any]:
    """Run the stage; returns the summary that `--json` prints (dataset path, n_items, counts per split)."""
    name, spec, sources = _resolve(options)
    preset = spec.preset if spec else None
    if spec is None and options.format not in readers.FORMATS:
        raise UsageError(f"unknown format {options.format!r}", f"Use one of: {', '.join(readers.FORMATS)}")
    if sources[0].table is not None:
        if options.format != "auto":
            raise UsageError(f"--format {options.format} says how to read a file, and the train log is a table", "Leave --format out")
        reader = TABLE_FORMAT
    else:
        reader = (
            spec.format if spec else options.format if options.format != "auto" else _named(sources[0], lambda: readers.infer_format(_readable(sources[0])))
        )
    if options.split not in ("time", "last"):
        raise UsageError(f"unknown split {options.split!r}", "Use --split time or --split last")
    if options.min_session_length < 1:
        raise UsageError("--min-session-length must be at least 1")
    if options.valid_fraction is not None and not 0 < options.valid_fraction < 1:
        raise UsageError("--valid-fraction must be between 0 and 1")
    if sum(x is not None for x in (options.valid_days, options.valid_fraction)) + options.no_valid > 1:
        raise UsageError("give at most one of --valid-days, --valid-fraction and --no-valid")
    _check_values(options, name)
    out = Path(options.out) if options.out else home.datasets_root() / name
    if out.exists() and not options.force:
        raise UsageError(f"{out} exists already", "Pass --force to replace it, or --name to write another dataset")
    check_replaceable(out, "dataset", inputs=tuple(source.path for source in sources if source.table is None))

    min_length = options.min_session_length
    min_support = options.min_item_support if options.min_item_support is not None else (preset.min_item_support if preset else 1)
    raws = [_read_source(source, spec, options, report) for source in sources]
    columns = raws[0].columns
    notes: list[tuple[Callable[[str], None], str]] = []  # said once the dataset is written: a refusal stays one line
    recognised = [role for role in readers.ROLES if getattr(options, f"{role}_col") is None]
    if columns is not None and recognised:
        picked = ", ".join(f"{columns[role]} ({role})" for role in readers.ROLES)
        notes.append((report.info, f"{sources[0].path.name}: columns {picked}; {', '.join(readers.FLAGS[role] for role in recognised)} pick others"))
    if raws[0].n_events == 0:
        raise InputFormatError(f"{sources[0].path} has no events of types {', '.join(options.event_types)}")
    parts, uniques = _shared_codes(raws)
    del raws  # at OTTO scale every copy of the events costs gigabytes: keep one generation alive at a time
    n_codes = len(uniques)
    history: list[dict[str, Any]] = []
    pre_split = len(parts) == 2
    split_on = preset.split_on if preset else "first"
    floor = preset.floor_to_day if preset else False

    train = parts.pop(0)
    _describe("read train" if pre_split else "read", train, history)
    notes += [(report.warn, note) for note in implausible_times(train, options.time_unit if spec is None else "ms")]
    train = drop_short_logged(train, min_length, history)
    if min_support > 1:
        train = steps.drop_rare_items(train, min_support, n_codes)
        _describe(f"items with >= {min_support} events", train, history)
        train = drop_short_logged(train, min_length, history)
    if len(train) == 0:
        raise InputFormatError(
            f"{sources[0].path}: no session is left after filtering (sessions >= {min_length} events, items >= {min_support} events)",
            "Lower --min-session-length or --min-item-support",
        )

    valid: Sessions | None = None
    targets = "all"
    if pre_split:
        test = parts.pop(0)
        _describe("read test", test, history)
        test = steps.drop_short(test, min_length)
    elif options.split == "last":
        train, valid, test = steps.leave_one_out(train)
        targets = "last"
        _describe("leave-one-out train", train, history)
    else:
        test_days = options.test_days if options.test_days is not None else (preset.test_days if preset and preset.test_days is not None else 1.0)
        train, test = steps.split_by_time(train, test_days * DAY_MS, split_on, floor)
        _describe(f"time split: train ({test_days:g} days before the latest start)", train, history)
        _describe("time split: test", test, history)
        notes += [(report.warn, note) for note in thin_test_split(train, test, test_days)]
        if len(train) == 0:
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
                valid_days, valid_fraction = own_validation(train, span)
        whole = train
        if valid_days is not None:
            train, valid = steps.split_by_time(train, valid_days * DAY_MS, split_on, floor)
        elif valid_fraction is not None:
            train, valid = steps.split_last_fraction(train, valid_fraction)
        if valid is not None:
            _describe("validation carved from train", valid, history)
            if len(train) == 0 or len(valid) == 0:
                told = options.valid_days is not None or options.valid_fraction is not None
                if told or preset is not None:
                    raise InputFormatError(
                        f"the validation split leaves {len(train)} train and {len(valid)} validation sessions",
                        "Change --valid-days / --valid-fraction, or pass --no-valid",
                    )
                notes.append((report.warn, f"{len(whole)} train sessions are too few to carve a validation split: training will keep its last epoch"))
                train, valid, valid_days, valid_fraction = whole, None, None, None
                history.pop()
            elif spec is None and options.valid_days is None and options.valid_fraction is None:
                chosen = f"the last {valid_days:g} day{'s' if valid_days != 1 else ''}" if valid_days is not None else f"the last {valid_fraction:.0%}"
                notes.append(
                    (
                        report.info,
                        f"validation: {chosen} of train, {len(valid):,} sessions (training keeps its best epoch on it; --valid-days, --valid-fraction or --no-valid change it)",
                    )
                )

    known = steps.present(n_codes, train, *([valid] if valid is not None else []))
    # the reference's datasets drop them, as its numbers were made; everything else keeps them, as misses
    unknown_policy = options.unknown_test_items or ("drop" if spec is not None else "keep")
    if unknown_policy not in ("drop", "keep"):
        raise UsageError(f"--unknown-test-items must be drop or keep, not {unknown_policy!r}")
    unknown = {**unknown_targets(test, known, targets), "policy": unknown_policy}
    if unknown_policy == "keep":
        catalogue = known | steps.present(n_codes, test)
    else:
        catalogue = known
        if targets == "last":
            test = test.select(known[test.items[test.offsets[1:] - 1]])
        else:
            test = steps.drop_short(steps.keep_events(test, known[test.items]), min_length)
        _describe("test without items unknown to train", test, history)
    if len(test) == 0:
        raise InputFormatError("no test session is left", "Check the split (--test-days, --test) and the filters")

    dense_of_code = np.cumsum(catalogue).astype(np.int32) * catalogue  # code -> 1..N, 0 when not in the catalogue
    counts = np.bincount(train.items, minlength=n_codes)[catalogue]
    raw_ids = uniques.take(pa.array(np.flatnonzero(catalogue)))
    pending = {"train": train, "valid": valid, "test": test}
    del train, valid, test
    splits = {}
    for key in list(pending):  # one split at a time, each releasing its code-level copy as it goes
        value = pending.pop(key)
        if value is not None:
            splits[key] = steps.to_dense(steps.by_start(value), dense_of_code)

    summary_counts = {key: _counts(value, targets) for key, value in splits.items()}
    extra_types = [name for name, code in EXTRA_TYPES.items() if any(value.extra is not None and value.extra.count(code) for value in splits.values())]
    info = {
        "name": name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "preset": spec.name if spec else None,
            "format": reader,
            "files": [{"path": str(s.path.resolve() if s.spool is None and s.table is None else s.path), "size": s.size, "sha256": s.sha256} for s in sources],
        },
        "parameters": {
            "split": "files" if pre_split else options.split,
            "test_days": None
            if pre_split or options.split == "last"
            else (options.test_days if options.test_days is not None else (preset.test_days if preset else 1.0)),
            "split_on": split_on,
            "valid": "leave-one-out"
            if targets == "last"
            else (None if "valid" not in splits else (f"{valid_fraction} of train sessions" if valid_fraction is not None else "days")),
            "valid_days": valid_days if targets != "last" and "valid" in splits else None,
            "columns": columns,
            "min_session_length": min_length,
            "min_item_support": min_support,
            "event_types": list(options.event_types) if reader == "otto-jsonl" else ["clicks"],
            "unknown_test_items": unknown_policy,
        },
        "unknown_test_targets": unknown,
        "n_items": int(catalogue.sum()),
        "item_id_type": str(uniques.type),
        "catalogue_sha256": catalogue_fingerprint(raw_ids),
        "targets": targets,
        "splits": list(splits),
        "extra_types": extra_types,
        "counts": summary_counts,
        "steps": history,
    }
    with atomic_directory(out, force=options.force) as tmp:
        for key, value in splits.items():
            write_sessions(tmp / f"{key}.parquet", value)
        write_items(tmp / "items.parquet", raw_ids, counts)
        write_json(tmp / "dataset.json", info, kind="dataset")
    for say, note in notes:
        say(note)
    return {"dataset": str(out.resolve()), "name": name, "n_items": info["n_items"], "targets": targets, "unknown_test_targets": unknown, **summary_counts}


LATEST_PLAUSIBLE_YEAR = 2100  # a log's time after this is a unit read wrongly (ms as s) or an outlier
THIN_TEST = (10, 0.01)  # a time split's test under this many sessions and this share of them is worth a warning


def implausible_times(sessions: Sessions, time_unit: str) -> list[str]:
    """A warning, with the numbers, when the log's times run past `LATEST_PLAUSIBLE_YEAR` as read with `time_unit`."""
    if not len(sessions.ts):
        return []
    latest = int(sessions.ts.max())
    limit = int(dt.datetime(LATEST_PLAUSIBLE_YEAR, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    if latest < limit:
        return []
    late = int((sessions.ts >= limit).sum())
    year = 1970 + latest / (365.2425 * DAY_MS)
    return [
        f"the log's times run to the year {year:,.0f} as read with --time-unit {time_unit} ({late:,} of {len(sessions.ts):,} events after "
        f"{LATEST_PLAUSIBLE_YEAR}): check the unit (s, ms, us, ns: --time-unit) or the log for outliers"
    ]


def thin_test_split(train: Sessions, test: Sessions, test_days: float) -> list[str]:
    """A warning, with the numbers, when the time split's test holds a tiny share of the sessions: the latest
    session starts far after the others (an outlier time), so the last --test-days hold almost nothing."""
    total = len(train) + len(test)
    if not len(test) or len(test) >= THIN_TEST[0] or len(test) >= THIN_TEST[1] * total:
        return []
    latest, before = int(steps.starts(test).max()), int(steps.starts(train).max()) if len(train) else None
    gap = "" if before is None else f", {(latest - before) / DAY_MS:,.1f} days after the latest train session's"
    try:
        when = dt.datetime.fromtimestamp(latest / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    except (ValueError, OverflowError):  # past the year 9999
        when = f"the year {1970 + latest / (365.2425 * DAY_MS):,.0f}"
    return [
        f"the test split holds {len(test):,} of {total:,} sessions ({100 * len(test) / total:.2g}%): the last {test_days:g} days before the latest "
        f"session start ({when}{gap}); an outlier time does this. Check the log's times, or set --test-days"
    ]


def own_validation(train: Sessions, test_span_days: float) -> tuple[float | None, float | None]:
    """(valid days, valid fraction) for a user's own log, one of them None: the test split's span again, taken
    from the end of train, when train spans at least `OWN_VALID_SPANS` of them; else the last tenth of train."""
    starts = steps.starts(train)
    span_days = float(starts.max() - starts.min()) / DAY_MS if len(train) else 0.0
    if span_days >= OWN_VALID_SPANS * test_span_days:
        return test_span_days, None
    return None, OWN_VALID_FRACTION


def unknown_targets(test: Sessions, known: np.ndarray, targets: str) -> dict[str, Any]:
    """How many test targets are items that train (+ valid) never saw, before any is dropped: a model cannot
    rank those, so keeping them (as misses) or dropping them moves every metric by about their fraction."""
    if targets == "last":
        n_targets = len(test)
        count = int((~known[test.items[test.offsets[1:] - 1]]).sum()) if n_targets else 0
    else:
        is_target = np.ones(test.n_events, dtype=bool)
        is_target[test.offsets[:-1][test.offsets[:-1] < test.n_events]] = False  # a session's first click is no target
        n_targets = int(is_target.sum())
        count = int((~known[test.items] & is_target).sum())
    return {"count": count, "fraction": count / n_targets if n_targets else 0.0, "of_targets": n_targets}


def _counts(sessions: Sessions, targets: str) -> dict[str, int]:
    """Sessions, clicks and targets of a split, and its other events by type when it has any."""
    out = {"sessions": len(sessions), "events": sessions.n_events, "targets": sessions.n_events - len(sessions) if targets == "all" else len(sessions)}
    if sessions.extra is not None and len(sessions.extra.items):
        out.update({name: sessions.extra.count(code) for name, code in EXTRA_TYPES.items()})
    return out


def drop_short_logged(sessions: Sessions, min_length: int, history: list[dict[str, Any]]) -> Sessions:
    sessions = steps.drop_short(sessions, min_length)
    _describe(f"sessions with >= {min_length} events", sessions, history)
    return sessions
