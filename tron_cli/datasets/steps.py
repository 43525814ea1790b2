"""The preprocessing steps shared by every source, vectorised over flat arrays (no per-session Python).

The stage decides on per-session figures (click counts, first and last times) held for the whole log, and
applies its decisions to one block of sessions at a time (`keep_events`, `head`, `to_dense`). Sessions here hold
integer codes of items (`blocks.Catalogue`: indices into the distinct raw ids in sorted order), so that filters
are bincounts and masks, and dense ids are a cumulative sum over the codes that survive. Sessions keep their
order of first appearance in the raw log until they are ranked by start (`start_ranks`), which is how the
reference breaks ties between sessions that start at the same moment.
"""

from __future__ import annotations

import numpy as np

from tron_cli.artifacts.sessions import ExtraEvents, Sessions, range_indices

DAY_MS = 86_400_000


def session_index(sessions: Sessions) -> np.ndarray:
    """(E,) index of the session that owns each event."""
    return np.repeat(np.arange(len(sessions), dtype=np.int32), sessions.lengths)


def time_order(offsets: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
    """The stable order that sorts events by time within each session, or None when they are sorted already."""
    if len(ts) < 2:
        return None
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    if not ((np.diff(ts) < 0) & (owner[1:] == owner[:-1])).any():
        return None
    return np.lexsort((ts, owner))  # lexsort is stable


def figures(offsets: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clicks, first time, last time) of each session of events sorted by time; times are 0 for an empty one."""
    lengths = np.diff(offsets)
    filled = lengths > 0
    first, last = np.zeros(len(lengths), np.int64), np.zeros(len(lengths), np.int64)
    first[filled] = ts[offsets[:-1][filled]]
    last[filled] = ts[offsets[1:][filled] - 1]
    return lengths, first, last


def keep_events(sessions: Sessions, mask: np.ndarray) -> Sessions:
    """Only the clicks where `mask` holds; sessions keep their place (possibly empty), and their other events."""
    lengths = np.bincount(session_index(sessions)[mask], minlength=len(sessions))
    offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Sessions(sessions.session, offsets, items=sessions.items[mask], ts=sessions.ts[mask], extra=sessions.extra)


def head(sessions: Sessions, lengths: np.ndarray) -> Sessions:
    """The first `lengths[s]` clicks of each session s, and its other events up to the last of those clicks."""
    offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    events = range_indices(sessions.offsets[:-1], lengths)
    extra = sessions.extra
    if extra is not None:
        last = np.where(lengths > 0, sessions.ts[np.maximum(sessions.offsets[:-1] + lengths - 1, 0)], np.iinfo(np.int64).min)
        owner = np.repeat(np.arange(len(sessions)), np.diff(extra.offsets))
        extra = extra.keep(extra.ts <= last[owner])
    return Sessions(sessions.session, offsets, items=sessions.items[events], ts=sessions.ts[events], extra=extra)


def time_cut(member_starts: np.ndarray, span_ms: float, floor_to_day: bool = False) -> float:
    """The moment a time split cuts at: the latest session start (floored to midnight if asked) − span."""
    latest = int(member_starts.max())
    if floor_to_day:
        latest -= latest % DAY_MS
    return latest - span_ms


def last_fraction(member_starts: np.ndarray, fraction: float) -> np.ndarray:
    """(S,) bool: the last `fraction` of sessions by start time (stable: ties keep their order)."""
    order = np.argsort(member_starts, kind="stable")
    n_after = round(len(member_starts) * fraction)
    after = np.zeros(len(member_starts), dtype=bool)
    after[order[len(member_starts) - n_after :]] = True
    return after


def start_ranks(member_starts: np.ndarray) -> np.ndarray:
    """(S,) int64: each session's place when ordered by start; ties keep their current order."""
    ranks = np.empty(len(member_starts), dtype=np.int64)
    ranks[np.argsort(member_starts, kind="stable")] = np.arange(len(member_starts))
    return ranks


def to_dense(sessions: Sessions, dense_of_code: np.ndarray) -> Sessions:
    """Codes replaced by dense ids; other events of items outside the catalogue (0) are dropped."""
    extra = sessions.extra
    if extra is not None:
        dense = dense_of_code[extra.items].astype(np.int32)
        extra = ExtraEvents(extra.offsets, dense, extra.ts, extra.types).keep(dense > 0)
    return Sessions(sessions.session, sessions.offsets, items=dense_of_code[sessions.items].astype(np.int32), ts=sessions.ts, extra=extra)
