"""From hidden states and negative ids to one training loss: TRON's negative assembly, top-k and the losses.

Negative scores per event are [uniform scores, in-batch scores] (E, U + m). With top-k, they are computed
once without autograd, the k best columns per event are chosen, and only those k scores are recomputed with
autograd (a gather of k rows per event): the backward pass never touches the [E, U + m] matrix, whose
gradient is zero outside the kept columns anyway. Shapes: B sessions, T positions, E real events, d hidden.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tron_cli import losses
from tron_cli.losses import LOSSES, LossContext
from tron_cli.models.base import ItemScorer
from tron_cli.sampling import ItemDistribution, Negatives


@dataclass(frozen=True)
class LossSpec:
    """A sampled loss by name (`losses.LOSSES`) with its options, and how negatives are kept."""

    loss: str = "ssm"
    topk: int = 0
    mask_hits: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)  # the loss's own; missing ones take their defaults
    logq: float = 0.0
    n_items: int = 0
    activation: Callable[[Tensor], Tensor] | None = None  # applied to scores first (the model's `activate`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", LOSSES.get(self.loss, "--loss").resolve(self.options))


def per_event(spec: LossSpec, pos: Tensor, neg: Tensor, valid: Tensor) -> Tensor:
    """(E,) loss of each event, by the registered loss of that name."""
    loss = LOSSES.get(spec.loss)
    if loss.per_event is None:
        raise ValueError(f"not a sampled loss: {spec.loss}")
    if spec.activation is not None:
        pos, neg = spec.activation(pos), spec.activation(neg)
    return loss.per_event(pos, neg, valid, LossContext(spec.options, spec.n_items))


class Assembly:
    """The events of one batch and their negatives: scores of every negative column, their ids and validity."""

    def __init__(self, scorer: ItemScorer, hidden: Tensor, mask: Tensor, targets: Tensor, negatives: Negatives, sparse: bool):
        b, t, d = hidden.shape
        self.scorer, self.negatives, self.sparse = scorer, negatives, sparse
        self.events = mask.reshape(-1).nonzero().squeeze(1)  # (E,) flat positions of real events
        self.owner = self.events // t  # (E,) session of each event
        self.hidden_padded = hidden  # (B, T, d)
        self.hidden = hidden.reshape(b * t, d)[self.events]  # (E, d)
        self.targets = targets.reshape(-1)[self.events]  # (E,)
        self.n_uniform = negatives.uniform.shape[-1]
        # (B, m) ids and validity of the in-batch negatives; m = 0 when there are none
        none = torch.zeros(b, 0, dtype=torch.long, device=hidden.device)
        self.in_batch = none if negatives.in_batch is None else negatives.in_batch
        self.in_batch_valid = none.bool() if negatives.in_batch_valid is None else negatives.in_batch_valid
        self.n_in_batch = self.in_batch.shape[1]

    def _per_session(self, ids: Tensor) -> Tensor:
        """Scores of per-session ids (B, K) for every event: (B, T, d) @ (B, d, K) -> (E, K)."""
        vectors, bias = self.scorer.lookup(ids, self.sparse)  # (B, K, d), (B, K)
        scores = self.hidden_padded @ vectors.to(self.hidden_padded.dtype).transpose(1, 2)  # (B, T, K)
        if bias is not None:
            scores = scores + bias.to(scores.dtype).unsqueeze(1)
        return scores.reshape(-1, ids.shape[1])[self.events]

    def all_scores(self) -> Tensor:
        """(E, U + m) scores of every negative column (with autograd, unless called under no_grad)."""
        parts = []
        uniform = self.negatives.uniform
        if self.n_uniform:
            if self.negatives.style == "batchwise":
                vectors, bias = self.scorer.lookup(uniform, self.sparse)  # (U, d)
                scores = self.hidden @ vectors.to(self.hidden.dtype).T  # (E, U): one GEMM, shared by the batch
                parts.append(scores if bias is None else scores + bias.to(scores.dtype))
            elif self.negatives.style == "sessionwise":
                parts.append(self._per_session(uniform))
            else:
                parts.append(self.scorer.score(self.hidden, uniform, self.sparse))  # uniform is (E, U)
        if self.n_in_batch:
            parts.append(self._per_session(self.in_batch))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def column_ids(self, columns: Tensor | None = None) -> Tensor:
        """Item ids of negative `columns` (E, K) per event, or of all columns when None."""
        if columns is None:
            columns = torch.arange(self.n_uniform + self.n_in_batch, device=self.events.device).expand(len(self.events), -1)
        is_uniform = columns < self.n_uniform
        ids = torch.zeros_like(columns)
        if self.n_uniform:
            u = columns.clamp(max=self.n_uniform - 1)
            uniform = self.negatives.uniform
            if self.negatives.style == "batchwise":
                ids = uniform[u]
            elif self.negatives.style == "sessionwise":
                ids = uniform[self.owner[:, None], u]
            else:
                ids = uniform.gather(1, u)
        if self.n_in_batch:
            in_batch = self.in_batch[self.owner[:, None], (columns - self.n_uniform).clamp(min=0)]
            ids = torch.where(is_uniform, ids, in_batch)
        return ids

    def column_valid(self, mask_hits: bool) -> Tensor:
        """(E, U + m) bool: slots holding a real negative (and, with `mask_hits`, not the event's own target)."""
        parts = []
        target = self.targets[:, None]
        if self.n_uniform:
            uniform, valid = self.negatives.uniform, self.negatives.uniform_valid
            if self.negatives.style == "sessionwise":
                uniform, valid = uniform[self.owner], None if valid is None else valid[self.owner]
            part = torch.ones(len(self.events), self.n_uniform, dtype=torch.bool, device=target.device)
            if valid is not None:
                part = part & valid
            parts.append(part & (uniform != target) if mask_hits else part)  # batchwise: (U,) against (E, 1)
        if self.n_in_batch:
            ids, valid = self.in_batch[self.owner], self.in_batch_valid[self.owner]
            parts.append(valid & (ids != target) if mask_hits else valid)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def log_q(self, distribution: ItemDistribution, in_batch_log_prob: Tensor, columns: Tensor | None = None) -> Tensor:
        """log(K q) of each negative column: q is the proposal that drew it (K draws of its kind)."""
        ids = self.column_ids(columns)
        if columns is None:
            columns = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        uniform = distribution.log_prob(ids) + math.log(max(self.n_uniform, 1))
        in_batch = in_batch_log_prob[ids] + math.log(max(self.n_in_batch, 1))
        return torch.where(columns < self.n_uniform, uniform, in_batch)


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
    """Loss over real events ("mean", or "sum" for callers that normalise across ranks).
    hidden (B, T, d), mask (B, T) bool, targets (B, T), negatives as drawn.

    `distribution` and `in_batch_log_prob` (log click frequency per item) are needed only with `spec.logq`.
    """
    batch = Assembly(scorer, hidden, mask, targets, negatives, sparse)
    if len(batch.events) == 0:
        return hidden.sum() * 0.0

    def correction(columns: Tensor | None = None) -> Tensor:
        """logQ of the negative columns (all, or the kept `columns`), weighted by spec.logq."""
        if distribution is None or in_batch_log_prob is None:
            raise ValueError("spec.logq needs the distribution and in_batch_log_prob")
        return spec.logq * batch.log_q(distribution, in_batch_log_prob, columns)

    with torch.autocast(hidden.device.type, enabled=False):
        hidden32 = batch.hidden.float()
        pos = scorer.score(hidden32, batch.targets.unsqueeze(1), sparse).squeeze(1)  # (E,)
    valid = batch.column_valid(spec.mask_hits)
    if spec.topk:
        with torch.no_grad():
            full = batch.all_scores().float()
            if spec.logq:
                full = full - correction()
            kept_scores, columns = full.masked_fill(~valid, float("-inf")).topk(spec.topk, dim=1)
            kept_valid = kept_scores > float("-inf")
            ids = batch.column_ids(columns)
        with torch.autocast(hidden.device.type, enabled=False):
            neg = scorer.score(hidden32, ids, sparse)  # (E, k): the only negative scores with autograd
            if spec.logq:
                neg = neg - correction(columns)
        valid = kept_valid
    else:
        neg = batch.all_scores().float()
        if spec.logq:
            neg = neg - correction()
    with torch.autocast(hidden.device.type, enabled=False):
        values = per_event(spec, pos, neg.float(), valid)
        return values.sum() if reduction == "sum" else values.mean()


def full_softmax_loss(scorer: ItemScorer, hidden: Tensor, mask: Tensor, targets: Tensor, chunk: int, reduction: str = "mean") -> Tensor:
    """Cross-entropy over the whole catalogue at every real position (the 'enhanced loss' of Li et al.)."""
    b, t, d = hidden.shape
    events = mask.reshape(-1).nonzero().squeeze(1)
    if len(events) == 0:
        return hidden.sum() * 0.0
    with torch.autocast(hidden.device.type, enabled=False):
        values = losses.full_cross_entropy(
            hidden.reshape(b * t, d)[events].float(), scorer.output_table(), scorer.output_bias, targets.reshape(-1)[events], chunk
        )
    return values.sum() if reduction == "sum" else values.mean()
