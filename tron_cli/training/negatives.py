"""From hidden states and negative ids to one training loss: TRON's negative assembly, top-k and the losses.

A step's events are a fixed number of slots (`EventSlots`): the real positions of the batch first, then empty
slots that count for nothing, so that every shape of a step is known before it runs (no host sync; the step
can be compiled or captured). Negative scores per event are [uniform scores, in-batch scores] (E, U + m).
With top-k they are computed once without autograd and masked once, in place; the k best columns per event
are the top-k of the top-k of the uniform block joined with the in-batch block; and the kept scores get their
gradients through `KeptScores`, which never materialises the (E, k, d) vectors of the kept items. The item
rows of a step's negatives are looked up once (the "pool", Q rows) and serve both the selection and the
gradients. Shapes: B sessions, W window positions, E event slots, d hidden.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tron_cli import runtime
from tron_cli.losses import LOSSES, LossContext
from tron_cli.losses.full import full_cross_entropy
from tron_cli.models.base import ItemScorer
from tron_cli.runtime import autocast_off
from tron_cli.training.sampling import ItemDistribution, Negatives
from tron_cli.training.top_columns import candidate_columns, proven_top, shared_scores

NEG_INF = float("-inf")


@dataclass(frozen=True, kw_only=True)
class LossSpec:
    """A sampled loss by name (`losses.LOSSES`) with its options, and how negatives are kept: the training options
    of the same names (declared in `training/config.py`, so none has a second default here)."""

    loss: str
    topk: int  # 0 keeps every negative
    mask_hits: bool
    logq: float
    options: Mapping[str, Any] = field(default_factory=dict)  # the loss's own; missing ones take their defaults
    n_items: int = 0
    activation: Callable[[Tensor], Tensor] | None = None  # applied to scores first (the model's `activate`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", LOSSES.get(self.loss, "--loss").resolve(self.options))


def per_event(spec: LossSpec, pos: Tensor, neg: Tensor, valid: Tensor, ordered: Tensor | None = None, preference: Tensor | None = None) -> Tensor:
    """(E,) loss of each event, by the registered loss of that name (two-objective losses: weighted by the
    step's `preference` (2,), with the events' order labels `ordered` (E,))."""
    loss = LOSSES.get(spec.loss)
    if loss.per_event is None:
        raise ValueError(f"not a sampled loss: {spec.loss}")
    if spec.activation is not None:
        pos, neg = spec.activation(pos), spec.activation(neg)
    return loss.per_event(pos, neg, valid, LossContext(spec.options, spec.n_items, ordered, preference))


@dataclass(frozen=True)
class EventSlots:
    """The events of a (B, W) batch as E slots: real positions in row-major order, then empty slots.

    `positions` are flat positions into B * W; an empty slot holds B * W, a position past the batch, which
    `gather` reads as zeros and `scatter` drops. Empty slots have target 0 (padding) and `real` False."""

    positions: Tensor  # (E,) int64
    real: Tensor  # (E,) bool
    targets: Tensor  # (E,) target item of each slot
    count: Tensor  # () real events, on the device
    batch: int
    width: int

    @classmethod
    def select(cls, mask: Tensor, targets: Tensor, slots: int | None = None) -> EventSlots:
        """The events of `mask` (B, W) in `slots` slots. Without `slots` the count is read from the device
        (a sync); the training loop knows it beforehand. EventSlots beyond `slots` would be dropped."""
        b, w = mask.shape
        flat = mask.reshape(-1)
        if slots is None:
            slots = int(flat.sum())
        # each real position goes to its rank among the real ones, every other position to a spare slot past the end
        rank = torch.cumsum(flat, 0) - 1
        slot = torch.where(flat, rank.clamp(max=slots), slots)
        positions = torch.full((slots + 1,), b * w, dtype=torch.long, device=mask.device)
        positions = positions.scatter(0, slot, torch.arange(b * w, device=mask.device))[:slots]
        real = positions < b * w
        return cls(positions, real, targets=_with_zero_row(targets.reshape(-1)).index_select(0, positions), count=flat.sum(), batch=b, width=w)

    @property
    def slots(self) -> int:
        return self.positions.shape[0]

    @property
    def owner(self) -> Tensor:
        """(E,) session of each slot (empty slots: the last one)."""
        return (self.positions // self.width).clamp(max=self.batch - 1)

    def gather(self, padded: Tensor) -> Tensor:
        """(B, W, ...) -> (E, ...); empty slots read zeros."""
        cells = self.batch * self.width
        rows = padded.reshape(cells, *padded.shape[2:]).index_select(0, self.positions.clamp(max=cells - 1))
        return torch.where(self.real.view(-1, *[1] * (rows.dim() - 1)), rows, 0)

    def scatter(self, values: Tensor) -> Tensor:
        """(E, ...) -> (B, W, ...) with zeros where no event is; empty slots are dropped. A row copy
        (`index_copy_`): `scatter_` with an expanded index takes a path 10-20x slower on CPU."""
        out = values.new_zeros(self.batch * self.width + 1, *values.shape[1:]).index_copy_(0, self.positions, values)
        return out[:-1].reshape(self.batch, self.width, *values.shape[1:])


def _with_zero_row(rows: Tensor) -> Tensor:
    return torch.cat([rows, rows.new_zeros(1, *rows.shape[1:])])


def take(table: Tensor, index: Tensor) -> Tensor:
    """table[index] for an index of any shape: rows (*index.shape, ...) by `index_select`, the one indexing op
    that every device (and torch's fake tensors) implements alike."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, *table.shape[1:])


class KeptScores(torch.autograd.Function):
    """Scores `hidden[e] · pool[index[e, j]] (+ bias)` (E, k) whose values were computed without autograd, with
    their gradients: for the hidden state a weighted sum of the k kept rows, for each pool row a weighted sum
    of the hidden states of the events that kept it (both `embedding_bag`, a fused gather-and-sum). The naive
    recomputation would materialise (E, k, d) rows twice and their product again in backward."""

    @staticmethod
    def forward(ctx, values: Tensor, hidden: Tensor, pool: Tensor, bias: Tensor | None, index: Tensor) -> Tensor:
        ctx.save_for_backward(hidden, pool, index)
        ctx.bias_rows = None if bias is None else bias.shape[0]
        return values.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor | None, Tensor | None, Tensor | None, None]:
        hidden, pool, index = ctx.saved_tensors
        grad = grad.to(pool.dtype).contiguous()
        grad_hidden = F.embedding_bag(index, pool, mode="sum", per_sample_weights=grad).to(hidden.dtype) if ctx.needs_input_grad[1] else None
        flat = index.reshape(-1)  # (E k,)
        grad_pool = grad_bias = None
        if ctx.needs_input_grad[2]:
            # bag q holds the (event, weight) pairs that kept pool row q: the pairs sorted by row, and each row's bag
            # starting where the bags of the rows before it end
            order = _grouping_order(flat, pool.shape[0])
            counts = torch.zeros(pool.shape[0], dtype=torch.long, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))
            offsets = torch.cumsum(counts, 0) - counts
            weights = grad.reshape(-1).index_select(0, order)
            grad_pool = F.embedding_bag(order // index.shape[1], hidden.to(pool.dtype), offsets, mode="sum", per_sample_weights=weights)
        if ctx.bias_rows is not None and ctx.needs_input_grad[3]:
            grad_bias = torch.zeros(ctx.bias_rows, dtype=grad.dtype, device=grad.device).scatter_add_(0, flat, grad.reshape(-1))
        return None, grad_hidden, grad_pool, grad_bias, None


def _grouping_order(keys: Tensor, n_keys: int) -> Tensor:
    """A stable argsort of `keys` in [0, n_keys). It sorts them as int32 where they fit (a third faster than
    int64), and on CPU on one thread: torch's parallel sort takes longer than one thread at the size of a
    step's kept negatives (about 10^5 keys)."""
    if n_keys <= torch.iinfo(torch.int32).max:
        keys = keys.int()
    if keys.device.type != "cpu" or torch.compiler.is_compiling():
        return torch.sort(keys, stable=True).indices
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.sort(keys, stable=True).indices
    finally:
        torch.set_num_threads(threads)


class Assembly:
    """The events of one batch and their negatives: the pool of negative rows, scores of every negative column,
    their ids and validity. hidden (E, d) are the states of the event slots."""

    def __init__(self, scorer: ItemScorer, hidden: Tensor, events: EventSlots, negatives: Negatives, sparse: bool):
        self.scorer, self.hidden, self.events, self.negatives = scorer, hidden, events, negatives
        self.owner = events.owner  # (E,)
        self.targets = events.targets  # (E,)
        uniform = negatives.uniform
        self.n_uniform = uniform.shape[-1]
        # (B, m) ids and validity of the in-batch negatives; m = 0 when there are none
        none = torch.zeros(events.batch, 0, dtype=torch.long, device=hidden.device)
        self.in_batch = none if negatives.in_batch is None else negatives.in_batch
        self.in_batch_valid = none.bool() if negatives.in_batch_valid is None else negatives.in_batch_valid
        self.n_in_batch = self.in_batch.shape[1]
        # one lookup for every item row of the step's loss: (Q, d) and (Q,), Q = E targets + uniform ids + B m
        self.first_uniform = events.slots
        self.first_in_batch = self.first_uniform + uniform.numel()
        self.pool, self.pool_bias = scorer.lookup(torch.cat([self.targets, uniform.reshape(-1), self.in_batch.reshape(-1)]), sparse)

    def _split(self, pool: Tensor) -> tuple[Tensor, Tensor]:
        """The negatives' rows of a pool-shaped tensor (Q, ...): (uniform-shaped (U,)/(B, U)/(E, U) ..., in-batch (B, m) ...)."""
        tail = pool.shape[1:]
        uniform, in_batch = pool[self.first_uniform : self.first_in_batch], pool[self.first_in_batch :]
        return uniform.reshape(*self.negatives.uniform.shape, *tail), in_batch.reshape(*self.in_batch.shape, *tail)

    def positive_scores(self) -> Tensor:
        """(E,) fp32 scores of each event's target, with autograd."""
        scores = (self.hidden.float() * self.pool[: self.first_uniform].float()).sum(-1)
        return scores if self.pool_bias is None else scores + self.pool_bias[: self.first_uniform].float()

    def _per_session(self, hidden: Tensor, vectors: Tensor, bias: Tensor | None) -> Tensor:
        """Scores of per-session rows (B, K, d) for every event: (B, W, d) @ (B, d, K) -> (E, K)."""
        scores = self.events.gather(self.events.scatter(hidden) @ vectors.to(hidden.dtype).transpose(1, 2))
        return scores if bias is None else scores + bias.index_select(0, self.owner).to(scores.dtype)

    def block_scores(self, hidden: Tensor, pool: Tensor, pool_bias: Tensor | None, with_uniform: bool = True) -> tuple[Tensor | None, Tensor | None]:
        """(uniform (E, U), in-batch (E, m)) scores, None for an empty block (and for the uniform one unless
        `with_uniform`); autograd as the inputs have it."""
        uniform_vectors, in_batch_vectors = self._split(pool)
        uniform_bias, in_batch_bias = self._split(pool_bias) if pool_bias is not None else (None, None)
        uniform = in_batch = None
        if self.n_uniform and with_uniform:
            style = self.negatives.style
            if style == "batchwise":
                uniform = shared_scores(hidden, uniform_vectors.to(hidden.dtype))  # (E, U): one product, shared by the batch
                uniform = uniform if uniform_bias is None else uniform + uniform_bias.to(uniform.dtype)
            elif style == "sessionwise":
                uniform = self._per_session(hidden, uniform_vectors, uniform_bias)
            else:  # eventwise: (E, U, d) rows of each event's own negatives
                uniform = torch.bmm(uniform_vectors.to(hidden.dtype), hidden.unsqueeze(-1)).squeeze(-1)
                uniform = uniform if uniform_bias is None else uniform + uniform_bias.to(uniform.dtype)
        if self.n_in_batch:
            in_batch = self._per_session(hidden, in_batch_vectors, in_batch_bias)
        return uniform, in_batch

    def all_scores(self) -> Tensor:
        """(E, U + m) scores of every negative column, with autograd."""
        parts = [part for part in self.block_scores(self.hidden, self.pool, self.pool_bias) if part is not None]
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def uniform_invalid(self, mask_hits: bool) -> Tensor | None:
        """Uniform slots that hold no negative, broadcastable to (E, U), or None when all hold one."""
        uniform, valid = self.negatives.uniform, self.negatives.uniform_valid
        if self.negatives.style == "sessionwise":
            uniform, valid = uniform.index_select(0, self.owner), None if valid is None else valid.index_select(0, self.owner)
        invalid = uniform == self.targets[:, None] if mask_hits else None  # batchwise: (U,) against (E, 1)
        if valid is not None:
            invalid = ~valid if invalid is None else invalid | ~valid
        return invalid

    def _most_hits(self, mask_hits: bool) -> int | None:
        """The most times any event's target is among batchwise uniform negatives that are all valid, read back
        (`runtime.reads_are_free`), so that `top_k` can mask hits among the k + r best instead of over the whole
        (E, U) block (two passes over it); None where reading would wait for a device, and where slots have a
        validity of their own."""
        negatives = self.negatives
        if not mask_hits or negatives.style != "batchwise" or negatives.uniform_valid is not None or not runtime.reads_are_free(self.hidden.device):
            return None
        drawn = negatives.uniform.sort().values  # (U,)
        counts = torch.searchsorted(drawn, self.targets, right=True) - torch.searchsorted(drawn, self.targets)  # (E,)
        return int(counts.max()) if counts.numel() else 0

    def in_batch_invalid(self, mask_hits: bool) -> Tensor:
        """(E, m) in-batch slots that hold no negative."""
        invalid = ~self.in_batch_valid.index_select(0, self.owner)
        return invalid | (self.in_batch.index_select(0, self.owner) == self.targets[:, None]) if mask_hits else invalid

    def column_valid(self, mask_hits: bool) -> Tensor:
        """(E, U + m) bool: slots holding a real negative (and, with `mask_hits`, not the event's own target)."""
        e = self.events.slots
        parts = []
        if self.n_uniform:
            invalid = self.uniform_invalid(mask_hits)
            parts.append(torch.ones(e, self.n_uniform, dtype=torch.bool, device=self.hidden.device) if invalid is None else ~invalid.expand(e, -1))
        if self.n_in_batch:
            parts.append(~self.in_batch_invalid(mask_hits))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def column_ids(self, columns: Tensor | None = None) -> Tensor:
        """Item ids of negative `columns` (E, K) per event, or of all columns when None."""
        if columns is None:
            columns = torch.arange(self.n_uniform + self.n_in_batch, device=self.hidden.device).expand(self.events.slots, -1)
        ids = torch.zeros_like(columns)
        if self.n_uniform:
            u = columns.clamp(max=self.n_uniform - 1)
            uniform = self.negatives.uniform
            if self.negatives.style == "batchwise":
                ids = take(uniform, u)
            elif self.negatives.style == "sessionwise":
                ids = uniform.index_select(0, self.owner).gather(1, u)
            else:
                ids = uniform.gather(1, u)
        if self.n_in_batch:
            in_batch = self.in_batch.index_select(0, self.owner).gather(1, (columns - self.n_uniform).clamp(min=0))
            ids = torch.where(columns < self.n_uniform, ids, in_batch)
        return ids

    def pool_index(self, columns: Tensor) -> Tensor:
        """(E, K) pool rows of negative `columns`."""
        rows = self.first_uniform + columns
        if self.negatives.style == "sessionwise":
            rows = rows + self.owner[:, None] * self.n_uniform
        elif self.negatives.style == "eventwise":
            rows = rows + torch.arange(columns.shape[0], device=columns.device)[:, None] * self.n_uniform
        in_batch = self.first_in_batch + self.owner[:, None] * self.n_in_batch + (columns - self.n_uniform)
        return torch.where(columns < self.n_uniform, rows, in_batch)

    def log_q(self, distribution: ItemDistribution, in_batch_log_prob: Tensor, columns: Tensor | None = None) -> Tensor:
        """log(K q) of each negative column: q is the proposal that drew it (K draws of its kind)."""
        if columns is None:
            return self._log_q_all(distribution, in_batch_log_prob)
        ids = self.column_ids(columns)
        uniform = distribution.log_prob(ids) + math.log(max(self.n_uniform, 1))
        in_batch = take(in_batch_log_prob, ids) + math.log(max(self.n_in_batch, 1))
        return torch.where(columns < self.n_uniform, uniform, in_batch)

    def _log_q_all(self, distribution: ItemDistribution, in_batch_log_prob: Tensor) -> Tensor:
        """(E, U + m) log(K q) of every column, block by block: the uniform block's log-probabilities are looked up
        for the ids as drawn ((U,) shared by a batchwise batch, (B, U) per session) and broadcast, and the in-batch
        block's per session, so that the (E, U + m) matrix is written once rather than gathered into column by column."""
        e = self.events.slots
        parts = []
        if self.n_uniform:
            uniform = self.negatives.uniform
            log_prob = distribution.log_prob(uniform) + math.log(self.n_uniform)
            if self.negatives.style == "sessionwise":
                log_prob = log_prob.index_select(0, self.owner)
            parts.append(log_prob.expand(e, -1))
        if self.n_in_batch:
            in_batch = take(in_batch_log_prob, self.in_batch) + math.log(self.n_in_batch)  # (B, m)
            parts.append(in_batch.index_select(0, self.owner))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0].contiguous()

    def top_k(self, k: int, mask_hits: bool, correction: Callable[[Tensor | None], Tensor] | None) -> tuple[Tensor, Tensor, Tensor, bool]:
        """(columns (E, k), their scores less the correction (E, k) fp32, valid (E, k), whether the scores were
        computed in fp32) of the k highest-scoring valid negatives of each event, without autograd. Invalid
        slots are masked once, in place; the uniform block's own top-k is taken first, so that the (E, U + m)
        matrix is never joined: on a CPU that multiplies bf16 in hardware, through `top_columns.proven_top`."""
        with torch.no_grad():
            hidden, pool = self.hidden.detach(), self.pool.detach()
            bias = None if self.pool_bias is None else self.pool_bias.detach()
            shift = correction(None) if correction is not None else None  # (E, U + m)
            late = self._most_hits(mask_hits) if self.n_uniform else None
            invalid = self.uniform_invalid(mask_hits) if self.n_uniform and late is None else None
            # with hits masked late, the k + r best hold the k best that are not hits (r: the most hits of an event)
            wanted = min(k + (late or 0), self.n_uniform)
            proven = None
            if self.n_uniform and self.negatives.style == "batchwise" and bias is None and shift is None:
                proven = proven_top(hidden, self._split(pool)[0], wanted, invalid)
            uniform, in_batch = self.block_scores(hidden, pool, bias, with_uniform=proven is None)
            exact = all(block.dtype == torch.float32 for block in (uniform, in_batch) if block is not None)
            candidates, columns = [], []
            uniform_top = proven if proven is not None or uniform is None else self._uniform_top(uniform, invalid, shift, wanted)
            if uniform_top is not None:
                top, top_columns = uniform_top
                if late:
                    top = top.masked_fill(take(self.negatives.uniform, top_columns) == self.targets[:, None], NEG_INF)
                candidates.append(top.float())
                columns.append(top_columns)
            if in_batch is not None:
                in_batch = in_batch.float().masked_fill_(self.in_batch_invalid(mask_hits), NEG_INF)
                if shift is not None:
                    in_batch = in_batch - shift[:, self.n_uniform :]
                candidates.append(in_batch)
                columns.append(torch.arange(self.n_uniform, self.n_uniform + self.n_in_batch, device=hidden.device).expand(in_batch.shape[0], -1))
            kept, pick = torch.cat(candidates, 1).topk(k, dim=1, sorted=False)
            return torch.cat(columns, 1).gather(1, pick), kept, kept > NEG_INF, exact

    def _uniform_top(self, uniform: Tensor, invalid: Tensor | None, shift: Tensor | None, wanted: int) -> tuple[Tensor, Tensor]:
        """(scores, columns) of a superset of each event's `wanted` best columns of the (E, U) `uniform` block,
        which is masked in place."""
        if invalid is not None:
            uniform.masked_fill_(invalid, NEG_INF)
        if shift is not None:
            uniform = uniform.float() - shift[:, : self.n_uniform]
        top_columns = candidate_columns(uniform, wanted)
        if top_columns is None:
            return uniform.topk(wanted, dim=1, sorted=False)
        return uniform.gather(1, top_columns), top_columns  # the final top-k of `top_k` picks among them

    def kept_scores(self, columns: Tensor, kept: Tensor, valid: Tensor, exact: bool, correction: Tensor | None) -> Tensor:
        """(E, k) fp32 scores of the kept `columns` with autograd (`KeptScores`). `kept` are their scores from
        the selection, less `correction`: the values themselves when the selection ran in fp32 (`exact`), else
        the k scores are recomputed in fp32 (reduced precision ranks well enough, but the loss wants fp32)."""
        index = self.pool_index(columns)
        hidden, pool = self.hidden.float(), self.pool.float()
        bias = None if self.pool_bias is None else self.pool_bias.float()
        with torch.no_grad():
            if exact:
                values = kept if correction is None else kept + correction
            else:
                values = torch.bmm(take(pool.detach(), index), hidden.detach().unsqueeze(-1)).squeeze(-1)
                values = values if bias is None else values + take(bias.detach(), index)
            values = torch.where(valid, values, 0.0)  # finite everywhere: the losses mask invalid slots
        return KeptScores.apply(values, hidden, pool, bias, index)


def event_loss(
    scorer: ItemScorer,
    hidden: Tensor,
    events: EventSlots,
    negatives: Negatives,
    spec: LossSpec,
    sparse: bool = False,
    distribution: ItemDistribution | None = None,
    in_batch_log_prob: Tensor | None = None,
    reduction: str = "mean",
    ordered: Tensor | None = None,
    preference: Tensor | None = None,
) -> Tensor:
    """Loss over the real events: "mean", or "sum" for callers that normalise across ranks.
    hidden (E, d) states of the event slots, negatives as drawn for them.

    `distribution` and `in_batch_log_prob` (log click frequency per item) are needed only with `spec.logq`;
    `ordered` (E,) order labels of the events and `preference` (2,) only with a two-objective loss.
    """
    if events.slots == 0:
        return hidden.sum() * 0.0
    batch = Assembly(scorer, hidden, events=events, negatives=negatives, sparse=sparse)

    def correction(columns: Tensor | None = None) -> Tensor:
        """logQ of the negative columns (all, or the kept `columns`), weighted by spec.logq."""
        if distribution is None or in_batch_log_prob is None:
            raise ValueError("spec.logq needs the distribution and in_batch_log_prob")
        return spec.logq * batch.log_q(distribution, in_batch_log_prob, columns)

    with autocast_off(hidden.device.type):
        pos = batch.positive_scores()  # (E,)
    if spec.topk:
        columns, kept, valid, exact = batch.top_k(spec.topk, spec.mask_hits, correction if spec.logq else None)
        shift = correction(columns) if spec.logq else None
        with autocast_off(hidden.device.type):
            neg = batch.kept_scores(columns, kept, valid=valid, exact=exact, correction=shift)  # (E, k): the only negative scores with autograd
            if shift is not None:
                neg = neg - shift
    else:
        neg = batch.all_scores().float()
        valid = batch.column_valid(spec.mask_hits)
        if spec.logq:
            neg = neg - correction()
    with autocast_off(hidden.device.type):
        values = torch.where(events.real, per_event(spec, pos, neg=neg.float(), valid=valid, ordered=ordered, preference=preference), 0.0)
        total = values.sum()
        return total if reduction == "sum" else total / events.count.clamp(min=1)


def sampled_loss(
    scorer: ItemScorer,
    hidden: Tensor,
    mask: Tensor,
    targets: Tensor,
    negatives: Negatives,
    spec: LossSpec,
    sparse: bool = False,
    distribution: ItemDistribution | None = None,
    in_batch_log_prob: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """`event_loss` from the padded layout: hidden (B, T, d), mask (B, T) bool, targets (B, T) (reads the
    number of events from the device)."""
    events = EventSlots.select(mask, targets)
    return event_loss(
        scorer,
        events.gather(hidden),
        events=events,
        negatives=negatives,
        spec=spec,
        sparse=sparse,
        distribution=distribution,
        in_batch_log_prob=in_batch_log_prob,
        reduction=reduction,
    )


def full_softmax_loss(scorer: ItemScorer, hidden: Tensor, events: EventSlots, chunk: int, reduction: str = "mean") -> Tensor:
    """Cross-entropy over the whole catalogue at every real event (the 'enhanced loss' of Li et al.); hidden (E, d)."""
    if events.slots == 0:
        return hidden.sum() * 0.0
    with autocast_off(hidden.device.type):
        values = full_cross_entropy(hidden.float(), scorer.output_table(), bias=scorer.output_bias, targets=events.targets, chunk=chunk)
        total = torch.where(events.real, values, 0.0).sum()
    return total if reduction == "sum" else total / events.count.clamp(min=1)
