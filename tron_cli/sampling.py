"""Negative item ids, drawn on the training device from seeded generators (no numpy, no per-session Python).

Two generators: `shared` draws what the whole (global) batch shares, the batchwise set, so that it is the
same on every data-parallel rank and N devices train exactly like one device with the same global batch;
`local` (seeded per rank) draws everything that belongs to the rank's own sessions.

- uniform (or popularity ** alpha) negatives, shared as `sampling_style` says: eventwise (E, U), sessionwise
  (B, U) or batchwise (U,); optionally rejecting the clicks of the session (of the batch, for batchwise);
- in-batch negatives: m of the batch's input clicks per session, without replacement, optionally never from
  the session itself (by position, as the reference); (B, m) ids plus a mask for slots that could not be filled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

MAX_REJECTION_ROUNDS = 64


class ItemDistribution:
    """Draws item ids 1..N uniformly or proportionally to count ** alpha, and gives log-probabilities."""

    def __init__(self, n_items: int, counts: Tensor | None, alpha: float, device: torch.device):
        self.n_items = n_items
        self.uniform = counts is None
        if counts is None:
            self.log_prob_table = None
        else:
            weights = counts.to(device=device, dtype=torch.float64).clamp(min=0) ** alpha
            weights[0] = 0.0  # padding is never drawn
            if weights.sum() <= 0:
                weights[1:] = 1.0
            probs = weights / weights.sum()
            self.cdf = torch.cumsum(probs, 0)
            self.log_prob_table = torch.log(probs).float()

    def sample(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        device = generator.device
        if self.uniform:
            return torch.randint(1, self.n_items + 1, shape, generator=generator, device=device)
        u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64) * self.cdf[-1]
        return torch.searchsorted(self.cdf, u).clamp_(1, self.n_items)

    def log_prob(self, items: Tensor) -> Tensor:
        if self.log_prob_table is None:  # uniform
            return torch.full(items.shape, -torch.log(torch.tensor(float(self.n_items))).item(), device=items.device)
        return self.log_prob_table[items]


@dataclass
class Negatives:
    """The ids of one step's negatives. `uniform` is (U,), (B, U) or (E, U) by `style`; in-batch is (B, m).
    The `*_valid` masks (same shapes, or None for all valid) mark slots that hold no usable negative."""

    style: str
    uniform: Tensor
    uniform_valid: Tensor | None = None
    in_batch: Tensor | None = None
    in_batch_valid: Tensor | None = None


def _reject(
    draw: Tensor, forbidden: Callable[[Tensor], Tensor], redraw: Callable[[torch.Size], Tensor], rounds: int = MAX_REJECTION_ROUNDS
) -> tuple[Tensor, Tensor]:
    """Redraw entries of `draw` for which `forbidden(draw)` holds; (ids, valid) where still-forbidden ones are invalid."""
    bad = forbidden(draw)
    for _ in range(rounds):
        if not bool(bad.any()):
            break
        draw = torch.where(bad, redraw(draw.shape), draw)
        bad = forbidden(draw)
    return draw, ~bad


def _member(keys: Tensor, sorted_pool: Tensor) -> Tensor:
    """keys in sorted_pool, elementwise (a vectorised set lookup)."""
    position = torch.searchsorted(sorted_pool, keys).clamp_(max=max(sorted_pool.numel() - 1, 0))
    return sorted_pool[position] == keys if sorted_pool.numel() else torch.zeros_like(keys, dtype=torch.bool)


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
    shape = {"batchwise": (count,), "sessionwise": (b, count)}.get(style) or (event_owner.numel(), count)  # type: ignore[union-attr]
    draw = distribution.sample(shape, shared if style == "batchwise" else local)
    if not reject_session_items or count == 0:
        return draw, None
    # redraws depend on the rank's own clicks, so they come from the local generator
    redraw = lambda s: distribution.sample(s, local)
    n = distribution.n_items + 1
    if style == "batchwise":
        pool = torch.unique(inputs[inputs != 0])  # sorted
        return _reject(draw, lambda d: _member(d, pool), redraw)
    # per session: the key (session, item) is forbidden when that session clicked that item
    session_of_click = torch.arange(b, device=inputs.device)[:, None].expand_as(inputs)
    pool = torch.unique((session_of_click * n + inputs)[inputs != 0])
    owner = torch.arange(b, device=inputs.device)[:, None] if style == "sessionwise" else event_owner[:, None]  # type: ignore[index]
    return _reject(draw, lambda d: _member(owner * n + d, pool), redraw)


def in_batch_negatives(inputs: Tensor, count: int, reject_own: bool, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(ids (B, m), valid (B, m)): m clicks of the batch per session, without replacement, by random keys.

    Each session ranks all B*T click positions by uniform random keys and takes the m smallest; padding (and,
    with `reject_own`, the session's own positions) get key 2 so they come last and are marked invalid.
    """
    b, t = inputs.shape
    flat = inputs.reshape(-1)  # (B*T,)
    if count > b * t:  # a tiny last batch: fewer click positions than slots, the rest stay invalid
        ids, valid = in_batch_negatives(inputs, b * t, reject_own, generator)
        pad = count - b * t
        return torch.nn.functional.pad(ids, (0, pad)), torch.nn.functional.pad(valid, (0, pad), value=False)
    keys = torch.rand(b, b * t, generator=generator, device=inputs.device)
    excluded = (flat == 0).unsqueeze(0).expand(b, -1)
    if reject_own:
        own = torch.arange(b * t, device=inputs.device) // t == torch.arange(b, device=inputs.device)[:, None]
        excluded = excluded | own
    keys = keys.masked_fill(excluded, 2.0)
    chosen_keys, positions = torch.topk(keys, count, dim=1, largest=False)  # (B, m)
    return flat[positions], chosen_keys < 2.0


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
) -> Negatives:
    """One step's negatives."""
    uniform, uniform_valid = uniform_negatives(distribution, n_uniform, style, inputs, event_owner, reject_session_items, shared, local)
    negatives = Negatives(style, uniform, uniform_valid)
    if n_in_batch > 0:
        negatives.in_batch, negatives.in_batch_valid = in_batch_negatives(inputs, n_in_batch, reject_in_batch_items, local)
    return negatives
