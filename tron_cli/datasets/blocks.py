"""Preprocessing in bounded memory: a log's sessions in blocks on disk, the catalogue they share, and the budget.

A reader hands over its sessions in blocks (`RawLog`s of whole sessions: a parse block of OTTO lines, a hash
partition of a table's rows, or a dataset reader's whole log); `BlockStore` writes each block to a temporary
Arrow IPC file and keeps in memory only what is needed per session (its place in the log and its figures). The
steps then read the blocks back one at a time, several times over, so the events are held in memory one block at
a time: memory grows with the number of sessions (about 40 bytes each) and the block size, not with the events.
`Catalogue` is the distinct raw ids seen across the blocks, numbered in sorted order as `steps.factorize` numbers
them. `Budget` sizes the blocks, the table partitions and the row groups from `--memory-limit`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tron_cli.datasets.readers import RawExtra, RawLog
from tron_cli.datasets.steps import figures, time_order
from tron_cli.errors import UsageError

MIB = 1 << 20
MEMORY_FLOOR = 64 * MIB
AUTO_SHARE = 4  # the automatic limit: a quarter of the machine's memory (a shared machine keeps the rest)
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def parse_memory_limit(text: str) -> int:
    """Bytes from `auto` (a quarter of `machine_memory`) or a size such as 4G, 4GiB, 512M, 1.5g (powers of 1024)."""
    if text.strip().lower() == "auto":
        return max(MEMORY_FLOOR, machine_memory() // AUTO_SHARE)
    match = SIZE.match(text)
    if not match:
        raise UsageError(f"--memory-limit {text!r} is not a size", "Give a size such as 4G, 512M or 2.5GiB, or auto")
    value = float(match.group(1)) * 1024 ** " kmgt".index((match.group(2) or " ").lower())
    if value < MEMORY_FLOOR:
        raise UsageError(f"--memory-limit {text} is below {MEMORY_FLOOR // MIB} MiB", f"Give at least {MEMORY_FLOOR // MIB}M")
    return int(value)


@dataclass(frozen=True)
class Budget:
    """What a memory limit allows at once."""

    limit: int  # bytes

    @property
    def parse_bytes(self) -> int:
        """Bytes of raw text parsed at a time (a parse holds about 20 times its size in transient strings)."""
        return int(np.clip(self.limit // 256, 256 << 10, 16 * MIB))

    @property
    def partition_bytes(self) -> int:
        """A table's rows are grouped by session one hash partition of about this many bytes at a time."""
        return self.limit // 8

    @property
    def row_group_sessions(self) -> int:
        """Sessions written per row group, each gathered in memory from the blocks (1,048,576: pyarrow's usual)."""
        return int(np.clip(self.limit // 4096, 16384, 1 << 20))


class Catalogue:
    """The distinct raw item ids of a log's blocks, then each id's code: its index among them in sorted order."""

    def __init__(self) -> None:
        self.low: int | None = None  # integer ids in a dense range: one flag per value from `low`
        self.flags = np.zeros(0, dtype=bool)
        self.seen = 0
        self.sparse: list[np.ndarray] = []  # integer ids too spread for flags: each block's distinct ids
        self.strings: list[pa.Array] = []
        self.uniques: pa.Array | None = None
        self.code_of: np.ndarray | None = None

    def add(self, values: pa.Array) -> None:
        if not len(values):
            return
        if not pa.types.is_integer(values.type):
            self.strings.append(pc.unique(values.cast(pa.string())))
            return
        array = values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        self.seen += len(array)
        low, high = int(array.min()), int(array.max())
        if self.low is not None or not self.sparse:
            new_low = low if self.low is None else min(low, self.low)
            new_high = high if self.low is None else max(high, self.low + len(self.flags) - 1)
            # a dense id space (OTTO's aids): marking present ids is O(E), where sorting would be O(E log E)
            if new_high - new_low < max(1 << 22, 4 * self.seen):
                if self.low is None or new_low < self.low or new_high >= self.low + len(self.flags):
                    grown = np.zeros(new_high - new_low + 1, dtype=bool)
                    if self.low is not None:
                        grown[self.low - new_low : self.low - new_low + len(self.flags)] = self.flags
                    self.low, self.flags = new_low, grown
                self.flags[array - self.low] = True
                return
            if self.low is not None:
                self.sparse.append(np.flatnonzero(self.flags) + self.low)
                self.low, self.flags = None, np.zeros(0, dtype=bool)
        self.sparse.append(np.unique(array))

    def finish(self) -> pa.Array:
        """The distinct ids in sorted order (integers as int64, anything else as strings)."""
        if self.strings or not (self.low is not None or self.sparse):
            if self.low is not None or self.sparse:  # a train log of string ids and a test log of integers: all strings
                integers = np.flatnonzero(self.flags) + self.low if self.low is not None else np.unique(np.concatenate(self.sparse))
                self.strings.append(pa.array(integers).cast(pa.string()))
            self.uniques = pc.unique(pa.chunked_array(self.strings, type=pa.string())).sort() if self.strings else pa.array([], pa.string())
        elif self.low is not None:
            present = np.flatnonzero(self.flags)
            self.code_of = np.full(len(self.flags), -1, dtype=np.int32)
            self.code_of[present] = np.arange(len(present), dtype=np.int32)
            self.uniques = pa.array(present + self.low, type=pa.int64())
        else:
            self.uniques = pa.array(np.unique(np.concatenate(self.sparse)), type=pa.int64())
        return self.uniques

    def codes(self, values: pa.Array) -> np.ndarray:
        """(n,) int32 codes of raw ids that `add` has seen."""
        assert self.uniques is not None, "finish() first"
        if not pa.types.is_integer(self.uniques.type):
            return np.asarray(pc.index_in(values.cast(pa.string()), self.uniques), dtype=np.int32)
        array = values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        if self.code_of is not None:
            assert self.low is not None
            return self.code_of[array - self.low]
        return np.searchsorted(self.uniques.to_numpy(), array).astype(np.int32)


@dataclass
class Block:
    """A block as read back: its sessions (events sorted by time within each) and their places in the log."""

    positions: np.ndarray  # (S,) int64: each session's index in the log's order (first appearance)
    log: RawLog


def _lists(offsets: np.ndarray, values: pa.Array | np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values if isinstance(values, pa.Array) else pa.array(values))


def _flat(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    offsets = np.asarray(array.offsets, dtype=np.int64)
    return offsets - offsets[0], array.values.slice(offsets[0], offsets[-1] - offsets[0])


def _time_sorted(log: RawLog) -> RawLog:
    """`log` with each session's events, and its other events, in time order (`steps.sort_events` on raw ids)."""
    extra = log.extra
    if extra is not None and (order := time_order(extra.offsets, extra.ts)) is not None:
        extra = RawExtra(extra.offsets, extra.item.take(pa.array(order)), extra.ts[order], extra.types[order])
    order = time_order(log.offsets, log.ts)
    if order is None:
        return RawLog(log.session, log.offsets, log.item, log.ts, columns=log.columns, extra=extra)
    return RawLog(log.session, log.offsets, log.item.take(pa.array(order)), log.ts[order], columns=log.columns, extra=extra)


class BlockStore:
    """The blocks of one log in a temporary directory (removed by `close`), with each block's session places."""

    def __init__(self, directory: Path, name: str, catalogue: Catalogue) -> None:
        self.directory = directory
        self.name = name
        self.catalogue = catalogue  # every block's item ids are added to it
        self.summaries: list[tuple[np.ndarray, ...]] = []  # per block: clicks, first and last click times per session
        self.files: list[Path] = []
        self.places: list[np.ndarray | int] = []  # per block: its sessions' positions, or the first one of a run
        self.sizes: list[int] = []  # sessions per block
        self.n_sessions = 0
        self.ids_are_positions = False  # a table of string session ids: a session's id is its place in the log

    def add(self, log: RawLog, positions: np.ndarray | None = None) -> None:
        """Store a block whose sessions come next in the log's order, or at `positions` (set later by `place`);
        its events are sorted by time within each session first (stable: ties keep the log's order)."""
        log = _time_sorted(log)
        self.catalogue.add(log.item)
        if log.extra is not None:
            self.catalogue.add(log.extra.item)
        self.summaries.append(figures(log.offsets, log.ts))
        extra = log.extra or RawExtra(np.zeros(len(log.session) + 1, np.int64), log.item.slice(0, 0), np.zeros(0, np.int64), np.zeros(0, np.int8))
        table = pa.table(
            {
                "session": pa.array(np.asarray(log.session, dtype=np.int64)),
                "items": _lists(log.offsets, log.item),
                "ts": _lists(log.offsets, np.asarray(log.ts, dtype=np.int64)),
                "extra_items": _lists(extra.offsets, extra.item),
                "extra_ts": _lists(extra.offsets, np.asarray(extra.ts, dtype=np.int64)),
                "extra_types": _lists(extra.offsets, np.asarray(extra.types, dtype=np.int8)),
            }
        )
        path = self.directory / f"{self.name}-{len(self.files):06d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        self.files.append(path)
        self.places.append(self.n_sessions if positions is None else positions)
        self.sizes.append(len(log.session))
        self.n_sessions += len(log.session)

    def place(self, positions: list[np.ndarray]) -> None:
        """Give every block's sessions their positions in the log (the table reader learns them last)."""
        self.places = list(positions)

    def figures(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(clicks, first and last click times) of every session, in the log's order (asked for once: the store
        forgets them)."""
        out = [np.zeros(self.n_sessions, np.int64) for _ in range(3)]
        for index, summary in enumerate(self.summaries):
            positions = self.positions(index)
            for array, values in zip(out, summary):
                array[positions] = values
        self.summaries = []
        return out[0], out[1], out[2]

    def positions(self, index: int) -> np.ndarray:
        place = self.places[index]
        return np.arange(place, place + self.sizes[index], dtype=np.int64) if isinstance(place, int) else place

    def read(self, index: int) -> Block:
        with pa.OSFile(str(self.files[index]), "rb") as source:
            table = pa.ipc.open_file(source).read_all()
        offsets, items = _flat(table.column("items"))
        _, ts = _flat(table.column("ts"))
        extra_offsets, extra_items = _flat(table.column("extra_items"))
        _, extra_ts = _flat(table.column("extra_ts"))
        _, extra_types = _flat(table.column("extra_types"))
        extra = RawExtra(extra_offsets, extra_items, np.asarray(extra_ts), np.asarray(extra_types)) if len(extra_items) else None
        positions = self.positions(index)
        session = positions if self.ids_are_positions else np.asarray(table.column("session").combine_chunks())
        return Block(positions, RawLog(session, offsets, items, np.asarray(ts), extra=extra))

    def __iter__(self) -> Iterator[Block]:
        for index in range(len(self.files)):
            yield self.read(index)

    def drop(self, index: int) -> None:
        """Delete a block's file once no step reads it again (the disk holds one copy of the events at a time)."""
        self.files[index].unlink(missing_ok=True)


class SpillDirectory:
    """A temporary directory for blocks and row groups (under $TMPDIR), removed whatever happens."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="tron-preprocess-"))

    def __enter__(self) -> SpillDirectory:
        return self

    def __exit__(self, *_: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
