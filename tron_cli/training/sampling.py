"""Negative item ids, drawn on the training device from seeded generators (no numpy, no per-session Python).

Two generators: `shared` draws what the whole (global) batch shares, the batchwise set, so that it is the
same on every data-parallel rank and N devices train exactly like one device with the same global batch;
`local` (seeded per rank) draws everything that belongs to the rank's own sessions.

- uniform (or popularity ** alpha) negatives, shared as `sampling_style` says: eventwise (E, U), sessionwise
  (B, U) or batchwise (U,); optionally never the clicks of the session (of the batch, for batchwise): drawn
  from the distribution restricted to the other items in one round (`ItemDistribution.sample_outside`), which
  is what rejection sampling converges to, without its loop or its device syncs;
- in-batch negatives: m of the batch's input clicks per session, without replacement, optionally never from
  the session itself (by position, as the reference); (B, m) ids plus a mask for slots that could not be filled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


class ItemDistribution:
    """Draws item ids 1..N uniformly or proportionally to count ** alpha, and gives log-probabilities."""

    def __init__(self, n_items: int, counts: Tensor | None, alpha: float, device: torch.device):
        self.n_items = n_items
        self.uniform = counts is None
        if counts is None:
            self.log_prob_table = None
            self.log_uniform = -math.log(n_items)
        else:
            weights = counts.to(device=device, dtype=torch.float64).clamp(min=0) ** alpha
            weights[0] = 0.0  # padding is never drawn
            if weights.sum() <= 0:
                weights[1:] = 1.0
            self.probs = weights / weights.sum()  # (N+1,) float64
            self.cdf = torch.cumsum(self.probs, 0)  # cdf[i]: the mass of items <= i
            self.log_prob_table = torch.log(self.probs).float()

    def sample(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        device = generator.device
        if self.uniform:
            return torch.randint(1, self.n_items + 1, shape, generator=generator, device=device)
        u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64) * self.cdf[-1]
        return torch.searchsorted(self.cdf, u).clamp_(1, self.n_items)

    def sample_outside(self, forbidden: Tensor, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(ids, valid), each (R, count): draws from the distribution restricted to the items outside each row of
        `forbidden` (R, P) (0: no item; repeats allowed), by inverting the allowed mass's CDF in one round.
        A slot is invalid only when its row's allowed mass is zero (or a float rounding lands on a boundary).

        With the row's distinct forbidden items f_1 < ... < f_p of masses w_j, a draw u in [0, allowed mass)
        skips c = #{j : allowed mass below f_j <= u} of them, and the item is the inverse CDF at u + w_1..c.
        """
        f = forbidden.sort(dim=1).values  # (R, P)
        first = torch.ones_like(f, dtype=torch.bool)
        first[:, 1:] = f[:, 1:] != f[:, :-1]
        total: int | Tensor
        if self.uniform:  # integer masses: item i has mass 1, the mass below it is i - 1
            mass, below, total = (f != 0).long(), (f - 1).clamp(min=0), self.n_items
        else:
            mass, below, total = self.probs[f], self.cdf[(f - 1).clamp(min=0)], self.cdf[-1]
        weight = mass * first  # each distinct item's mass once
        cumulative = torch.cumsum(weight, 1)
        # forbidden mass of distinct items < f_j (a repeat carries none of its own, but follows its first)
        lower = cumulative - weight - mass * ~first
        allowed_below = below - lower  # (R, P), non-decreasing
        allowed = total - cumulative[:, -1]  # (R,)
        u = torch.rand((f.shape[0], count), generator=generator, device=generator.device, dtype=torch.float64) * allowed[:, None]
        if self.uniform:
            u = u.long().clamp(max=(allowed[:, None] - 1).clamp(min=0))
        skipped = torch.searchsorted(allowed_below, u, right=True)  # (R, count)
        x = u + torch.nn.functional.pad(cumulative, (1, 0)).gather(1, skipped)
        ids = x + 1 if self.uniform else torch.searchsorted(self.cdf, x, right=True)
        ids = ids.clamp(1, self.n_items)
        position = torch.searchsorted(f, ids).clamp(max=f.shape[1] - 1)
        return ids, (allowed > 0)[:, None] & (f.gather(1, position) != ids)

    def log_prob(self, items: Tensor) -> Tensor:
        if self.log_prob_table is None:
            return torch.full(items.shape, self.log_uniform, device=items.device)
        return self.log_prob_table.index_select(0, items.reshape(-1)).view(items.shape)


@dataclass
class Negatives:
    """The ids of one step's negatives. `uniform` is (U,), (B, U) or (E, U) by `style`; in-batch is (B, m).
    The `*_valid` masks (same shapes, or None for all valid) mark slots that hold no usable negative."""

    style: str
    uniform: Tensor
    uniform_valid: Tensor | None = None
    in_batch: Tensor | None = None
    in_batch_valid: Tensor | None = None


def uniform_negatives(
    distribution: ItemDistribution,
    count: int,
    style: str,
    inputs: Tensor,
    event_owner: Tensor | None,
    reject_session_items: bool,
    shared: torch.Generator,
    local: torch.Generator,
) -> tuple[Tensor, Tensor | None]:
    """(ids, valid or None) of `count` negatives per event/session/batch. inputs (B, T) left-padded clicks."""
    b = inputs.shape[0]
    if style == "eventwise" and event_owner is None:
        raise ValueError("eventwise negatives need the session of each event")
    if not reject_session_items or count == 0:
        shape = {"batchwise": (count,), "sessionwise": (b, count)}.get(style) or (event_owner.numel(), count)  # type: ignore[union-attr]
        return distribution.sample(shape, shared if style == "batchwise" else local), None
    # the forbidden items depend on the rank's own clicks: per-session draws come from the local generator
    if style == "batchwise":
        ids, valid = distribution.sample_outside(inputs.reshape(1, -1), count, shared)
        return ids[0], valid[0]
    forbidden = inputs if style == "sessionwise" else inputs[event_owner]  # (B or E, T)
    return distribution.sample_outside(forbidden, count, local)


def in_batch_negatives(inputs: Tensor, count: int, reject_own: bool, generator: torch.Generator, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(ids (B, m), valid (B, m)): m clicks of the batch per session, without replacement, by random keys.

    The candidates are the flat `positions` into inputs (B, T) (B * T: none), by default all B * T of them;
    passing the positions of the real clicks (the training events) draws the same way from fewer keys. Each
    session ranks the candidates by uniform random keys and takes the m smallest; padding (and, with
    `reject_own`, the session's own positions) get key 2 so they come last and are marked invalid.
    """
    b, t = inputs.shape
    if positions is None:
        positions = torch.arange(b * t, device=inputs.device)
    n = positions.shape[0]
    if count > n:  # a tiny last batch: fewer candidates than slots, the rest stay invalid
        ids, valid = in_batch_negatives(inputs, n, reject_own=reject_own, generator=generator, positions=positions)
        pad = count - n
        return torch.nn.functional.pad(ids, (0, pad)), torch.nn.functional.pad(valid, (0, pad), value=False)
    clicks = torch.cat([inputs.reshape(-1), inputs.new_zeros(1)])[positions]  # (n,)
    keys = torch.rand(b, n, generator=generator, device=inputs.device)
    excluded = (clicks == 0).unsqueeze(0).expand(b, -1)
    if reject_own:
        excluded = excluded | (positions // t == torch.arange(b, device=inputs.device)[:, None])
    keys = keys.masked_fill(excluded, 2.0)
    chosen_keys, chosen = torch.topk(keys, count, dim=1, largest=False)  # (B, m)
    return clicks[chosen], chosen_keys < 2.0


def draw(
    distribution: ItemDistribution,
    inputs: Tensor,
    event_owner: Tensor | None,
    n_uniform: int,
    n_in_batch: int,
    style: str,
    reject_session_items: bool,
    reject_in_batch_items: bool,
    shared: torch.Generator,
    local: torch.Generator,
    click_positions: Tensor | None = None,
) -> Negatives:
    """One step's negatives; in-batch ones among `click_positions` (flat, into inputs) when given."""
    uniform, uniform_valid = uniform_negatives(
        distribution, n_uniform, style=style, inputs=inputs, event_owner=event_owner, reject_session_items=reject_session_items, shared=shared, local=local
    )
    negatives = Negatives(style, uniform, uniform_valid)
    if n_in_batch > 0:
        negatives.in_batch, negatives.in_batch_valid = in_batch_negatives(
            inputs, n_in_batch, reject_own=reject_in_batch_items, generator=local, positions=click_positions
        )
    return negatives
