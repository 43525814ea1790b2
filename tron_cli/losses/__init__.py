"""The training losses, declared once in the `LOSSES` registry: name, function, options and help.

Sampled losses take one signature, `loss(pos (E,), neg (E, K), valid (E, K) bool) -> (E,)`; callers average.

`valid` is False where a negative column is not a negative (an accidental hit that is masked, or a slot
that could not be filled); such columns never contribute, whatever their score.

- `ssm`: cross-entropy of the positive against [positive, negatives] (sampled softmax);
- `bce`: softplus(-pos) + mean_j softplus(neg_j), the reference's form without its overflow;
- `bpr_max`: -log sum_j softmax(neg)_j sigmoid(pos - neg_j) + penalty sum_j softmax(neg)_j neg_j^2;
- `gbce` (gSASRec): mean over [positive, negatives] of binary cross-entropy with the positive probability
  raised to beta = 1 - t (1 - alpha), alpha = K / (N - 1); computed as beta * softplus(-pos), which is exact
  and cannot overflow. t = 0 gives plain binary cross-entropy;
- `full_cross_entropy`: softmax over the whole catalogue, chunked, never materialising [E, N].

Two-objective losses (MultiTRON's `ssm_and_be`, `ssm_and_distortion`) are registered by `multiobjective.py`:
their `per_event` reads the step's preference vector and the events' order labels from the `LossContext`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tron_cli.registry import Registry

EPSILON = 1e-10  # inside bpr-max's log, as the reference recommends


def ssm(pos: Tensor, neg: Tensor, valid: Tensor) -> Tensor:
    logits = torch.cat([pos.unsqueeze(-1), neg.masked_fill(~valid, float("-inf"))], dim=-1)
    return torch.logsumexp(logits, dim=-1) - pos


def bce(pos: Tensor, neg: Tensor, valid: Tensor) -> Tensor:
    negatives = (F.softplus(neg) * valid).sum(-1) / valid.sum(-1).clamp(min=1)
    return F.softplus(-pos) + negatives


def bpr_max(pos: Tensor, neg: Tensor, valid: Tensor, penalty: float) -> Tensor:
    any_valid = valid.any(-1, keepdim=True)
    weights = torch.softmax(neg.masked_fill(~valid, float("-inf")), dim=-1)
    weights = torch.where(any_valid, weights, torch.zeros_like(weights))  # no negative at all: no loss
    finite = neg.masked_fill(~valid, 0.0)
    ranking = -torch.log((weights * torch.sigmoid(pos.unsqueeze(-1) - finite)).sum(-1) + EPSILON)
    ranking = torch.where(any_valid.squeeze(-1), ranking, torch.zeros_like(ranking))
    return ranking + penalty * (weights * finite.square()).sum(-1)


def gbce(pos: Tensor, neg: Tensor, valid: Tensor, t: float, n_items: int) -> Tensor:
    k = valid.sum(-1).to(pos.dtype)
    alpha = k / max(n_items - 1, 1)
    beta = 1.0 - t * (1.0 - alpha)
    total = beta * F.softplus(-pos) + (F.softplus(neg) * valid).sum(-1)
    return total / (1.0 + k)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Softmax cross-entropy of hidden (E, d) over items 1..N of table (N+1, d) [+ bias (N+1, 1)], chunk by chunk.

    Forward keeps an online log-sum-exp; backward recomputes each chunk's scores and accumulates
    d/dh = sum_c (p_c - y_c) W_c and d/dW_c = (p_c - y_c)^T h, so peak memory is E x chunk, never E x N.
    Arithmetic is in fp32 at least (fp64 inputs stay fp64).
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, table: Tensor, bias: Tensor | None, targets: Tensor, chunk: int) -> Tensor:
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        h = hidden.to(dtype)
        running_max = torch.full((h.shape[0],), float("-inf"), dtype=dtype, device=h.device)
        running_sum = torch.zeros(h.shape[0], dtype=dtype, device=h.device)
        for start in range(1, table.shape[0], chunk):
            scores = _chunk_scores(h, table, bias, start, chunk)  # (E, C)
            new_max = torch.maximum(running_max, scores.max(dim=1).values)
            running_sum = running_sum * torch.exp(running_max - new_max) + torch.exp(scores - new_max[:, None]).sum(1)
            running_max = new_max
        lse = running_max + torch.log(running_sum)
        target_scores = (h * table.index_select(0, targets).to(dtype)).sum(-1)
        if bias is not None:
            target_scores = target_scores + bias[targets, 0].to(dtype)
        ctx.save_for_backward(hidden, table, bias if bias is not None else torch.empty(0), targets, lse)
        ctx.chunk = chunk
        ctx.has_bias = bias is not None
        return lse - target_scores

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        hidden, table, bias, targets, lse = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        dtype = lse.dtype
        h = hidden.to(dtype)
        grad_loss = grad_loss.to(dtype)
        grad_hidden = torch.zeros_like(h)
        grad_table = torch.zeros(table.shape, dtype=dtype, device=table.device)
        grad_bias = torch.zeros(table.shape[0], 1, dtype=dtype, device=table.device) if bias is not None else None
        for start in range(1, table.shape[0], ctx.chunk):
            stop = min(start + ctx.chunk, table.shape[0])
            probs = torch.exp(_chunk_scores(h, table, bias, start, ctx.chunk) - lse[:, None]) * grad_loss[:, None]  # (E, C)
            grad_hidden += probs @ table[start:stop].to(dtype)
            grad_table[start:stop] += probs.T @ h
            if grad_bias is not None:
                grad_bias[start:stop, 0] += probs.sum(0)
        # the target term: d(-s_target)/ds = -1 per event
        grad_hidden -= grad_loss[:, None] * table[targets].to(dtype)
        grad_table.index_add_(0, targets, -grad_loss[:, None] * h)
        if grad_bias is not None:
            grad_bias.index_add_(0, targets, -grad_loss[:, None])
        return (
            grad_hidden.to(hidden.dtype),
            grad_table.to(table.dtype),
            grad_bias.to(table.dtype) if grad_bias is not None else None,
            None,
            None,
        )


def _chunk_scores(h: Tensor, table: Tensor, bias: Tensor | None, start: int, chunk: int) -> Tensor:
    scores = h @ table[start : start + chunk].to(h.dtype).T
    if bias is not None:
        scores += bias[start : start + chunk, 0].to(h.dtype)
    return scores


def full_cross_entropy(hidden: Tensor, table: Tensor, bias: Tensor | None, targets: Tensor, chunk: int = 65536) -> Tensor:
    """(E,) cross-entropy of each target against the whole catalogue (row 0, padding, excluded)."""
    return _ChunkedCrossEntropy.apply(hidden, table, bias, targets, chunk)


# ------------------------------------------------------------------------------------------------ the registry


@dataclass(frozen=True)
class Option:
    """A loss's own option: `tron train --NAME` (dashes for underscores), a config key, a field of config.json."""

    name: str
    default: Any
    help: str
    valid: Callable[[Any], bool] = lambda value: True
    requirement: str = ""  # what `valid` asks, for the error message ("must be ...")


@dataclass(frozen=True)
class Loss:
    """A training objective. A sampled loss scores each event's positive against its negatives:
    `per_event(pos (E,), neg (E, K), valid (E, K), context) -> (E,)`; a full loss (`sampled=False`) scores
    every catalogue item instead and needs no negatives."""

    name: str
    summary: str  # one line for --help and docs
    per_event: Callable[[Tensor, Tensor, Tensor, LossContext], Tensor] | None = None
    options: tuple[Option, ...] = ()
    sampled: bool = True
    logq: bool = False  # whether the logQ correction of sampled scores applies (softmax-like losses)
    objectives: tuple[str, ...] = ("click",)  # two for MultiTRON's losses: the click and a second objective
    needs_orders: bool = False  # whether `per_event` reads the events' order labels (`LossContext.ordered`)

    def resolve(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """This loss's option values: the given ones over the defaults, each checked."""
        out = {option.name: values.get(option.name, option.default) for option in self.options}
        for option in self.options:
            if not option.valid(out[option.name]):
                raise_usage(f"--{option.name.replace('_', '-')} {option.requirement}")
        return out


@dataclass(frozen=True)
class LossContext:
    """What a per-event loss may need beyond the scores: its options and the catalogue size."""

    options: Mapping[str, Any] = field(default_factory=dict)
    n_items: int = 0
    ordered: Tensor | None = None  # (E,) whether each event's target is ordered later in its session
    preference: Tensor | None = None  # (2,) the step's [click weight, second weight] (two-objective losses)


def raise_usage(message: str) -> None:
    from tron_cli.errors import UsageError

    raise UsageError(message)


def _finite_at_least(low: float) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, (int, float)) and math.isfinite(value) and value >= low


LOSSES: Registry[Loss] = Registry("loss", builtins=("tron_cli.losses.multitron",))
LOSSES.register(
    "ssm",
    Loss(
        "ssm", "sampled softmax: cross-entropy of the positive against [positive, negatives] (TRON)", lambda pos, neg, valid, c: ssm(pos, neg, valid), logq=True
    ),
)
LOSSES.register("bce", Loss("bce", "binary cross-entropy of the positive and each negative (SASRec)", lambda pos, neg, valid, c: bce(pos, neg, valid)))
LOSSES.register(
    "bpr-max",
    Loss(
        "bpr-max",
        "BPR-max with score regularisation (GRU4Rec+)",
        lambda pos, neg, valid, c: bpr_max(pos, neg, valid, c.options["bpr_penalty"]),
        (Option("bpr_penalty", 1.0, "Score regularisation of bpr-max.", _finite_at_least(0.0), "must be a finite number >= 0"),),
        logq=True,
    ),
)
LOSSES.register(
    "gbce",
    Loss(
        "gbce",
        "generalised binary cross-entropy (gSASRec)",
        lambda pos, neg, valid, c: gbce(pos, neg, valid, c.options["gbce_t"], c.n_items),
        (
            Option(
                "gbce_t",
                0.75,
                "Calibration t of gbce (0: plain binary cross-entropy).",
                lambda t: isinstance(t, (int, float)) and 0 <= t <= 1,
                "must be in [0, 1]",
            ),
        ),
    ),
)
LOSSES.register(
    "ce",
    Loss(
        "ce",
        "full cross-entropy over the whole catalogue, chunked (no negatives)",
        None,
        (
            Option(
                "ce_chunk",
                65536,
                "Catalogue items scored at once by --loss ce (bounds its memory).",
                lambda n: isinstance(n, int) and not isinstance(n, bool) and n >= 1,
                "must be at least 1",
            ),
        ),
        sampled=False,
    ),
)


def all_options() -> dict[str, tuple[Option, list[str]]]:
    """{option name: (declaration, losses that have it)} over every registered loss."""
    out: dict[str, tuple[Option, list[str]]] = {}
    for name, loss in LOSSES.items():
        for option in loss.options:
            out.setdefault(option.name, (option, []))[1].append(name)
    return out
