"""What the scorer's blends read and return: each row's session (`Context`), sparse per-row scores (`Bonus`), and
the repeat boost.

A blend scores a few items per row from the session so far, never the whole catalogue: the transition prior the
successors of the last click (`transitions.py`), session kNN the items of the most similar train sessions
(`knn.py`), the repeat boost the session's own clicks (`Repeats`, below). Each returns its *part*, unweighted, as a
`Bonus`; the scorer adds their weighted sum to the network's scores (`combine`), so a ranking adds a few (row,
item) values to each chunk of the catalogue and an item index fetches the items they name as extra candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from tron_cli.batching import SessionStore, owned_ranges


@dataclass(frozen=True)
class Context:
    """The sessions the blends read, one row per state: every click of a row's session so far, with its recency."""

    last: Tensor  # (Q,) each row's last click (0: none)
    rows: Tensor  # (P,) the row of each click
    items: Tensor  # (P,) its dense id
    recency: Tensor  # (P,) 1 for its row's last click, 2 for the one before, ...

    def __len__(self) -> int:
        return len(self.last)

    @classmethod
    def of_positions(cls, store: SessionStore, positions: Tensor, sessions: Tensor | None = None) -> Context:
        """The clicks before each flat position `positions` (Q,) of `store`, in its own session (a target's history);
        `sessions` names each position's session when a position may be its session's end."""
        starts = store.offsets[store.session_of(positions) if sessions is None else sessions]
        rows, index = owned_ranges(starts, positions - starts)
        return cls(store.items[positions - 1], rows, store.items[index], positions[rows] - index)

    @classmethod
    def of_windows(cls, windows: Tensor) -> Context:
        """The clicks of left-padded windows (Q, T) (0 = padding), the last column the most recent."""
        width = windows.shape[1]
        rows, columns = (windows > 0).nonzero(as_tuple=True)
        return cls(windows[:, -1], rows, windows[rows, columns], width - columns)

    @classmethod
    def of_clicks(cls, rows: Tensor, items: Tensor, n_rows: int) -> Context:
        """The clicks (rows (P,) ascending, items (P,)) of `n_rows` sessions, each session's in click order."""
        counts = torch.bincount(rows, minlength=n_rows)
        ends = torch.cumsum(counts, 0)
        within = torch.arange(len(rows), device=rows.device) - (ends - counts)[rows]
        recency = counts[rows] - within
        last = torch.zeros(n_rows, dtype=items.dtype, device=items.device)
        last[rows[recency == 1]] = items[recency == 1]
        return cls(last, rows, items, recency)

    def select(self, rows: Tensor) -> Context:
        """The context of some of the rows, `rows` (R,) distinct, in that order."""
        where = torch.full((len(self.last),), -1, dtype=torch.long, device=self.last.device)
        where[rows] = torch.arange(len(rows), device=rows.device)
        keep = where[self.rows] >= 0
        return Context(self.last[rows], where[self.rows[keep]], self.items[keep], self.recency[keep])


@dataclass(frozen=True)
class Bonus:
    """Sparse per-row additions to scores: (row, item) pairs with their values. `combine` makes them unique and
    sorted by row then item, which `lookup` and `best_items` need."""

    rows: Tensor  # (P,)
    items: Tensor  # (P,)
    values: Tensor  # (P,)

    @classmethod
    def empty(cls, device: torch.device | str, dtype: torch.dtype = torch.float64) -> Bonus:
        none = torch.zeros(0, dtype=torch.long, device=device)
        return cls(none, none, torch.zeros(0, dtype=dtype, device=device))

    def add_to_chunk(self, scores: Tensor, start: int) -> Tensor:
        """scores (Q, C) of items start..start+C-1 with each (row, item)'s value added (a new tensor); the pairs
        must be unique, so that each score is rounded once, as `lookup` rounds it."""
        width = scores.shape[1]
        inside = (self.items >= start) & (self.items < start + width)
        # a scatter with zeros outside the chunk: no boolean indexing, so nothing waits for the device
        flat = self.rows * width + (self.items - start).clamp(0, width - 1)
        return scores.reshape(-1).scatter_add(0, flat, torch.where(inside, self.values, 0.0).to(scores.dtype)).view_as(scores)

    def lookup(self, n_items: int, rows: Tensor, items: Tensor) -> Tensor:
        """(...) the value of each (row, item) pair asked for, 0 where it has none (pairs sorted by `combine`)."""
        keys = self.rows * (n_items + 1) + self.items
        wanted = rows * (n_items + 1) + items
        if len(keys) == 0:
            return torch.zeros(wanted.shape, dtype=self.values.dtype, device=items.device)
        position = torch.searchsorted(keys, wanted.reshape(-1)).clamp(max=len(keys) - 1).view_as(wanted)
        return torch.where((keys[position] == wanted) & (items > 0), self.values[position], 0.0)

    def best_items(self, n_rows: int, k: int) -> Tensor:
        """(Q, k) each row's items with the largest values, largest first, 0 where a row has fewer."""
        out = torch.zeros(n_rows, k, dtype=torch.long, device=self.rows.device)
        if len(self.rows) == 0 or k == 0:
            return out
        # rows ascending, the largest value first within a row
        order = torch.argsort(self.values.double(), descending=True, stable=True)
        order = order[torch.argsort(self.rows[order], stable=True)]
        rows, items = self.rows[order], self.items[order]
        counts = torch.bincount(rows, minlength=n_rows)
        within = torch.arange(len(rows), device=rows.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        keep = within < k
        out[rows[keep], within[keep]] = items[keep]
        return out


def combine(parts: list[tuple[float, Bonus]], n_items: int, device: torch.device | str) -> Bonus:
    """The weighted sum of blends' parts as one `Bonus` of unique (row, item) pairs, sorted, fp32: summed in float64
    and rounded once, so that a score plus its bonus is the same number however it is computed."""
    used = [(weight, part) for weight, part in parts if weight != 0 and len(part.rows)]
    if not used:
        return Bonus.empty(device, torch.float32)
    keys = torch.cat([part.rows * (n_items + 1) + part.items for _, part in used])
    values = torch.cat([weight * part.values.double() for weight, part in used])
    unique, inverse = torch.unique(keys, return_inverse=True)
    summed = torch.zeros(len(unique), dtype=torch.float64, device=keys.device).index_add_(0, inverse, values)
    return Bonus(unique // (n_items + 1), unique % (n_items + 1), summed.float())


class Blend(Protocol):
    """One blend of a scorer: its kind, its weight and its unweighted part of each row's scores."""

    @property
    def kind(self) -> str: ...

    @property
    def weight(self) -> float: ...

    def part(self, context: Context) -> Bonus: ...

    def reweighted(self, weight: float) -> Any: ...

    def section(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Repeats:
    """The repeat boost: R / r for an item the session clicked, r = 1 for its last click, 2 for the one before, ...
    (its most recent click counts). Session data repeats items: on Tmall a third of the test targets are earlier
    clicks of their session, which a network trained on the next click ranks too low."""

    weight: float
    kind: str = "repeat"

    def part(self, context: Context) -> Bonus:
        n = int(context.items.max()) + 1 if len(context.items) else 1
        keys = context.rows * n + context.items
        unique, inverse = torch.unique(keys, return_inverse=True)
        values = torch.zeros(len(unique), dtype=torch.float64, device=keys.device)
        values = values.scatter_reduce(0, inverse, 1.0 / context.recency.double(), "amax", include_self=False)
        return Bonus(unique // n, unique % n, values)

    def reweighted(self, weight: float) -> Repeats:
        return Repeats(weight)

    def section(self) -> dict[str, Any]:
        return {"kind": self.kind, "weight": self.weight}
