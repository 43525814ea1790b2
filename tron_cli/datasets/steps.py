"""The preprocessing steps shared by every source, vectorised over flat arrays (no per-session Python).

Sessions here hold integer codes of items (`factorize`: indices into the distinct raw ids in sorted order),
so that filters are bincounts and masks, and dense ids are a cumulative sum over the codes that survive.
Sessions stay in order of first appearance in the raw file until `by_start` orders them, which is how the
reference breaks ties between sessions that start at the same moment.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tron_cli.artifacts.sessions import ExtraEvents, Sessions, range_indices

DAY_MS = 86_400_000


def factorize(parts: list[pa.Array]) -> tuple[list[np.ndarray], pa.Array]:
    """Codes (int32) of every part over their shared distinct values, and those values sorted:
    parts[p][i] == uniques[codes[p][i]]. Codes follow the sort order; integer ids come back as int64."""
    if all(pa.types.is_integer(part.type) for part in parts):
        arrays = [part.to_numpy(zero_copy_only=False) for part in parts]
        low = min((int(a.min()) for a in arrays if len(a)), default=0)
        high = max((int(a.max()) for a in arrays if len(a)), default=0)
        total = sum(len(a) for a in arrays)
        if high - low < max(1 << 22, 4 * total):
            # a dense id space (OTTO aids): marking present ids is O(E), where sorting would be O(E log E)
            present = np.zeros(high - low + 1, dtype=bool)
            for array in arrays:
                present[array - low] = True
            code_of = (np.cumsum(present) - 1).astype(np.int32)
            return [code_of[array - low] for array in arrays], pa.array(np.flatnonzero(present) + low, type=pa.int64())
        uniques = np.unique(np.concatenate(arrays))
        return [np.searchsorted(uniques, array).astype(np.int32) for array in arrays], pa.array(uniques, type=pa.int64())
    parts = [part.cast(pa.string()) for part in parts]
    uniques = pc.unique(pa.chunked_array(parts)).sort()
    return [np.asarray(pc.index_in(part, uniques), dtype=np.int32) for part in parts], uniques


def session_index(sessions: Sessions) -> np.ndarray:
    """(E,) index of the session that owns each event."""
    return np.repeat(np.arange(len(sessions), dtype=np.int32), sessions.lengths)


def _time_order(offsets: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
    """The stable order that sorts events by time within each session, or None when they are sorted already."""
    if len(ts) < 2:
        return None
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    if not ((np.diff(ts) < 0) & (owner[1:] == owner[:-1])).any():
        return None
    return np.lexsort((ts, owner))  # lexsort is stable


def sort_events(sessions: Sessions) -> Sessions:
    """ExtraEvents sorted by time within each session (stable: ties keep file order, as Python's sorted does); the
    other events (carts, orders) likewise."""
    extra = sessions.extra
    if extra is not None and (order := _time_order(extra.offsets, extra.ts)) is not None:
        extra = ExtraEvents(extra.offsets, extra.items[order], extra.ts[order], extra.types[order])
    order = _time_order(sessions.offsets, sessions.ts)
    if order is None:
        return Sessions(sessions.session, sessions.offsets, items=sessions.items, ts=sessions.ts, extra=extra)
    return Sessions(sessions.session, sessions.offsets, items=sessions.items[order], ts=sessions.ts[order], extra=extra)


def keep_events(sessions: Sessions, mask: np.ndarray) -> Sessions:
    """Only the clicks where `mask` holds; sessions keep their place (possibly empty), and their other events."""
    lengths = np.bincount(session_index(sessions)[mask], minlength=len(sessions))
    offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Sessions(sessions.session, offsets, items=sessions.items[mask], ts=sessions.ts[mask], extra=sessions.extra)


def drop_short(sessions: Sessions, min_length: int) -> Sessions:
    return sessions.select(sessions.lengths >= min_length)


def drop_rare_items(sessions: Sessions, min_support: int, n_codes: int) -> Sessions:
    """Drop events of items with fewer than `min_support` events in `sessions`."""
    if min_support <= 1:
        return sessions
    support = np.bincount(sessions.items, minlength=n_codes)
    return keep_events(sessions, support[sessions.items] >= min_support)


def starts(sessions: Sessions) -> np.ndarray:
    return sessions.ts[sessions.offsets[:-1]]


def ends(sessions: Sessions) -> np.ndarray:
    return sessions.ts[sessions.offsets[1:] - 1]


def split_by_time(sessions: Sessions, span_ms: float, on: str, floor_to_day: bool = False) -> tuple[Sessions, Sessions]:
    """(before, after): cut = latest session start (floored to midnight if asked) − span; a session is
    after the cut when its first (`on="first"`) or last (`on="last"`) event is at or after it."""
    latest = int(starts(sessions).max())
    if floor_to_day:
        latest -= latest % DAY_MS
    cut = latest - span_ms
    moment = starts(sessions) if on == "first" else ends(sessions)
    after = moment >= cut
    return sessions.select(~after), sessions.select(after)


def split_last_fraction(sessions: Sessions, fraction: float) -> tuple[Sessions, Sessions]:
    """(before, after): the last `fraction` of sessions by start time go after."""
    order = np.argsort(starts(sessions), kind="stable")
    n_after = round(len(sessions) * fraction)
    after = np.zeros(len(sessions), dtype=bool)
    after[order[len(sessions) - n_after :]] = True
    return sessions.select(~after), sessions.select(after)


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


def leave_one_out(sessions: Sessions) -> tuple[Sessions, Sessions, Sessions]:
    """(train, valid, test) as SASRec/BERT4Rec: test is the whole session (its last item the target), valid the
    session without its last item, train without its last two. Sessions of fewer than 3 events stay in train."""
    lengths = sessions.lengths
    long = lengths >= 3
    train = head(sessions, np.where(long, lengths - 2, lengths))
    return drop_short(train, 1), head(sessions.select(long), lengths[long] - 1), sessions.select(long)


def by_start(sessions: Sessions) -> Sessions:
    """Sessions ordered by their first event; ties keep their current order."""
    return sessions.select(np.argsort(starts(sessions), kind="stable"))


def present(n_codes: int, *parts: Sessions) -> np.ndarray:
    """(U,) bool: codes that occur in any of `parts`."""
    mask = np.zeros(n_codes, dtype=bool)
    for part in parts:
        mask[part.items] = True
    return mask


def to_dense(sessions: Sessions, dense_of_code: np.ndarray) -> Sessions:
    """Codes replaced by dense ids; other events of items outside the catalogue (0) are dropped."""
    extra = sessions.extra
    if extra is not None:
        dense = dense_of_code[extra.items].astype(np.int32)
        extra = ExtraEvents(extra.offsets, dense, extra.ts, extra.types).keep(dense > 0)
    return Sessions(sessions.session, sessions.offsets, items=dense_of_code[sessions.items].astype(np.int32), ts=sessions.ts, extra=extra)
