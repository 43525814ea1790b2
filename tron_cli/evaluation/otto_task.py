"""OTTO's own task, as its organisers define it (otto-de/recsys-dataset: `src/testset.py`, `src/labels.py`,
`src/evaluate.py`), on a dataset whose sessions keep their carts and orders.

Each test session's events (clicks, carts, orders in time order; a click before another event at the same
moment) are cut at a random point: `random.Random(seed).randint(1, n - 1)` per session in the dataset's order,
as `testset.py` draws with Python's `random` (seed 42 there). The events before the cut are the context; the
labels are those of the last context event, computed from the events after the cut: the next click, the set
of items carted afterwards and the set ordered afterwards. A prediction is 20 items per type; the score is
Recall@20 per type, summed over sessions with each denominator capped at 20 (`min(|labels|, 20)`), weighted
0.10 clicks, 0.30 carts, 0.60 orders. The model reads the context's clicks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from tron_cli.artifacts.sessions import CART, ORDER, Sessions

TYPES = ("clicks", "carts", "orders")
WEIGHTS = {"clicks": 0.10, "carts": 0.30, "orders": 0.60}
K = 20
CLICK = 0  # the kind of a click in a merged sequence; carts and orders keep their artifacts codes


@dataclass
class Merged:
    """Every event of each session in time order: session s owns offsets[s]:offsets[s+1]."""

    offsets: np.ndarray  # (S+1,)
    items: np.ndarray  # (M,)
    kinds: np.ndarray  # (M,) int8: CLICK, CART or ORDER


def merged(sessions: Sessions) -> Merged:
    """Clicks and other events of each session in one time-ordered sequence (ties: a click first, then the
    other events in their stored order)."""
    extra = sessions.extra
    if extra is None:
        return Merged(sessions.offsets, sessions.items, np.zeros(sessions.n_events, dtype=np.int8))
    n = len(sessions)
    owner = np.concatenate([np.repeat(np.arange(n), sessions.lengths), np.repeat(np.arange(n), np.diff(extra.offsets))])
    ts = np.concatenate([sessions.ts, extra.ts])
    later = np.concatenate([np.zeros(sessions.n_events, np.int8), np.ones(len(extra.items), np.int8)])
    stored = np.arange(len(owner))  # within a kind, the stored order breaks the remaining ties
    order = np.lexsort((stored, later, ts, owner))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sessions.lengths + np.diff(extra.offsets), out=offsets[1:])
    items = np.concatenate([sessions.items, extra.items])[order]
    kinds = np.concatenate([np.zeros(sessions.n_events, np.int8), extra.types])[order]
    return Merged(offsets, items, kinds)


def draw_cuts(lengths: np.ndarray, seed: int) -> np.ndarray:
    """(S,) the organisers' cut of each session of `lengths` events: randint(1, n - 1), one draw per session
    with at least 2 events, in order; 0 for shorter sessions (they have no labels)."""
    rng = random.Random(seed)
    return np.array([rng.randint(1, int(n) - 1) if n >= 2 else 0 for n in lengths], dtype=np.int64)


@dataclass
class Cut:
    """The organisers' split of sessions: how many clicks each context holds and the labels after the cut."""

    context_clicks: np.ndarray  # (S,) clicks among the events before the cut
    next_click: np.ndarray  # (S,) the first click after the cut, 0 when none
    carted: tuple[np.ndarray, np.ndarray]  # (sessions, items): distinct items carted after the cut
    ordered: tuple[np.ndarray, np.ndarray]  # (sessions, items): distinct items ordered after the cut
    labelled: np.ndarray  # (S,) bool: sessions with a cut (>= 2 events)


def cut(sequence: Merged, cuts: np.ndarray) -> Cut:
    """The contexts and labels of `sequence` cut at `cuts` (S,) events (0: no cut)."""
    n = len(sequence.offsets) - 1
    lengths = np.diff(sequence.offsets)
    owner = np.repeat(np.arange(n), lengths)
    index = np.arange(len(sequence.items)) - sequence.offsets[:-1][owner]  # position within the session
    after = index >= cuts[owner]
    is_click = sequence.kinds == CLICK
    context_clicks = np.bincount(owner[is_click & ~after], minlength=n)
    first_after = np.full(n, -1, dtype=np.int64)
    clicks_after = np.flatnonzero(is_click & after)  # ascending, so each session's first one is its next click
    sessions_with, first = np.unique(owner[clicks_after], return_index=True)
    first_after[sessions_with] = clicks_after[first]
    next_click = np.where(first_after >= 0, sequence.items[np.maximum(first_after, 0)], 0)

    def distinct(kind: int) -> tuple[np.ndarray, np.ndarray]:
        chosen = np.flatnonzero((sequence.kinds == kind) & after)
        pairs = np.unique(np.stack([owner[chosen], sequence.items[chosen]]), axis=1) if len(chosen) else np.zeros((2, 0), np.int64)
        return pairs[0], pairs[1]

    labelled = cuts > 0
    next_click = np.where(labelled, next_click, 0)
    carted, ordered = (distinct(kind) for kind in (CART, ORDER))
    keep_carts, keep_orders = labelled[carted[0]], labelled[ordered[0]]
    return Cut(
        context_clicks,
        next_click,
        carted=(carted[0][keep_carts], carted[1][keep_carts]),
        ordered=(ordered[0][keep_orders], ordered[1][keep_orders]),
        labelled=labelled,
    )


def _hits(top: np.ndarray, labels: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(L,) whether each (session, item) label is in its session's top-k row of `top` (S, k)."""
    sessions, items = labels
    return (top[sessions] == items[:, None]).any(1)


def score(top: dict[str, np.ndarray], labels: Cut, k: int = K) -> dict[str, float]:
    """OTTO's Recall@k per type and the weighted total, from each type's top-k ids (S, >= k) per session."""
    n = len(labels.labelled)
    clicked = labels.next_click > 0
    click_hits = float(((top["clicks"][:, :k] == labels.next_click[:, None]).any(1) & clicked).sum())
    out: dict[str, float] = {"clicks": click_hits / max(int(clicked.sum()), 1)}
    denominators = {"clicks": int(clicked.sum())}
    for name, pairs in (("carts", labels.carted), ("orders", labels.ordered)):
        per_session = np.bincount(pairs[0], minlength=n)
        denominators[name] = int(np.minimum(per_session, k).sum())
        hits = _hits(top[name][:, :k], pairs).sum() if len(pairs[0]) else 0
        out[name] = float(hits) / max(denominators[name], 1)
    out["total"] = sum(WEIGHTS[name] * out[name] for name in TYPES)
    return {
        **{f"otto_{name}": value for name, value in out.items()},
        **{f"n_{name}": count for name, count in denominators.items()},
        "n_sessions": int(labels.labelled.sum()),
    }
