"""A split resident on the training device, and every batch built from it with tensor ops (no per-session Python).

The store is the flat item tensor (E,) and offsets (S+1,) of a sessions Parquet file. From it:
- `tail_windows`: the last L clicks of each chosen session, left-padded (SASRec training, the tron protocol);
- `query_windows`: for any click position p, the clicks before p in its session, left-padded (evaluation);
- `Lanes`: GRU4Rec's session-parallel mini-batches, one click per lane per step.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from tron_cli.artifacts.sessions import Sessions
from tron_cli.labels import order_labels


class SessionStore:
    def __init__(self, sessions: Sessions, device: torch.device, min_length: int = 1):
        keep = sessions.lengths >= min_length
        if not keep.all():
            sessions = sessions.select(keep)
        self.sessions = sessions
        self.device = torch.device(device)
        self.items = torch.from_numpy(sessions.items.astype(np.int64)).to(self.device)  # (E,)
        self.offsets = torch.from_numpy(sessions.offsets).to(self.device)  # (S+1,)
        self.lengths = self.offsets[1:] - self.offsets[:-1]  # (S,)
        # (E,) whether each click's item is ordered later in its session; None without order events
        self.ordered = torch.from_numpy(order_labels(sessions)).to(self.device) if sessions.extra is not None else None

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def n_events(self) -> int:
        return self.sessions.n_events

    def tail_windows(self, index: Tensor, width: int) -> Tensor:
        """(B, width) the last `width` clicks of sessions `index`, left-padded with 0."""
        return self._tail(self.items, index, width)

    def tail_labels(self, index: Tensor, width: int) -> Tensor:
        """(B, width) bool: the order labels (`ordered`) of the clicks `tail_windows` gives, False on padding."""
        if self.ordered is None:
            raise ValueError("the sessions have no order events")
        return self._tail(self.ordered, index, width)

    def _tail(self, values: Tensor, index: Tensor, width: int) -> Tensor:
        """(B, width) the per-click `values` (E,) of the last `width` clicks of sessions `index`, left-padded with 0."""
        ends = self.offsets[index + 1]  # (B,)
        lengths = self.lengths[index].clamp(max=width)  # (B,)
        column = torch.arange(width, device=self.device)
        first = width - lengths  # first real column of each row
        source = ends[:, None] - width + column  # (B, width) flat positions, valid from `first` on
        real = column >= first[:, None]
        return torch.where(real, values[source.clamp(min=0)], torch.zeros((), dtype=values.dtype, device=self.device))

    def target_positions(self, last_only: bool) -> Tensor:
        """(Q,) flat positions of every target: each click but the first of its session, or only the last one."""
        if last_only:
            return self.offsets[1:] - 1
        # target j skips the first clicks of the sessions whose first click comes before it; the number of targets
        # before session k's first click is offsets[k] - k (a count known beforehand: nothing waits for the device)
        target = torch.arange(self.n_events - len(self), device=self.device)
        return target + torch.searchsorted(self.offsets[:-1] - torch.arange(len(self), device=self.device), target, right=True)

    def session_of(self, positions: Tensor) -> Tensor:
        """(Q,) the session index that owns each flat position."""
        return torch.searchsorted(self.offsets, positions, right=True) - 1

    def query_windows(self, positions: Tensor, width: int, sessions: Tensor | None = None) -> Tensor:
        """(Q, width): the (at most `width`) clicks before each flat position in its own session, left-padded.
        `sessions` names each position's session when a position may be its session's end."""
        starts = self.offsets[self.session_of(positions) if sessions is None else sessions]
        available = (positions - starts).clamp(max=width)  # (Q,)
        column = torch.arange(width, device=self.device)
        source = positions[:, None] - width + column
        real = column >= (width - available)[:, None]
        return torch.where(real, self.items[source.clamp(min=0)], torch.zeros((), dtype=self.items.dtype, device=self.device))


class Lanes:
    """GRU4Rec's session-parallel mini-batches: B lanes each walk one session's clicks, one per step.

    A lane that finishes takes the next session of `order` (its hidden state is reset); the tail of at most
    `max_events` clicks of each session is used. All on the device; `safe_steps` tells how many steps can run
    before the epoch may end, so the loop syncs with the device only a few times per epoch.
    """

    def __init__(self, store: SessionStore, order: Tensor, batch_size: int, max_events: int):
        self.store = store
        self.order = order
        self.max_events = max_events
        device = store.device
        self.b = batch_size
        targets = (store.lengths[order].clamp(max=max_events) - 1).clamp(min=0)
        # targets still in the queue after the first i sessions of `order` have been handed out
        self.queue_targets = torch.cat([torch.flip(torch.cumsum(torch.flip(targets, [0]), 0), [0]), torch.zeros(1, dtype=targets.dtype, device=device)])
        self.next = torch.zeros((), dtype=torch.long, device=device)
        self.position = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.end = torch.zeros(batch_size, dtype=torch.long, device=device)  # exclusive; position + 1 < end: lane active
        self.fresh = torch.ones(batch_size, dtype=torch.bool, device=device)
        self._refill(torch.ones(batch_size, dtype=torch.bool, device=device))

    def _refill(self, finished: Tensor) -> None:
        slot = self.next + torch.cumsum(finished.long(), 0) - 1  # queue index for each finished lane
        has_session = finished & (slot < len(self.order))
        session = self.order[slot.clamp(max=len(self.order) - 1)]
        end = self.store.offsets[session + 1]
        start = torch.maximum(self.store.offsets[session], end - self.max_events)
        self.position = torch.where(has_session, start, self.position)
        self.end = torch.where(has_session, end, torch.where(finished, self.position, self.end))
        self.fresh = finished
        self.next = self.next + finished.sum()

    def step(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(inputs (B,), targets (B,), active (B,), reset (B,)): the next click of every lane; `reset` marks new sessions."""
        active = self.position + 1 < self.end
        items = self.store.items
        safe = self.position.clamp(max=len(items) - 2)
        inputs = torch.where(active, items[safe], 0)
        targets = torch.where(active, items[safe + 1], 0)
        reset = self.fresh
        self.position = torch.where(active, self.position + 1, self.position)
        self._refill(self.position + 1 >= self.end)
        return inputs, targets, active, reset

    def safe_steps(self) -> int:
        """Steps that certainly still have a target (one sync): remaining targets / B, rounded up."""
        in_lanes = (self.end - self.position - 1).clamp(min=0).sum()
        remaining = int(in_lanes + self.queue_targets[self.next.clamp(max=len(self.order))])
        return math.ceil(remaining / self.b)


def owned_ranges(starts: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """(owner (P,), index (P,)): for each row r, the indices starts[r] .. starts[r] + counts[r] - 1."""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    ends = torch.cumsum(counts, 0)
    within = torch.arange(int(ends[-1]) if len(ends) else 0, device=counts.device) - torch.repeat_interleave(ends - counts, counts)
    return owner, starts[owner] + within
