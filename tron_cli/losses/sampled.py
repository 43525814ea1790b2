"""The sampled losses: each event's positive score against its kept negatives (after TRON's shared negatives and top-k).

- `ssm`: cross-entropy of the positive against [positive, negatives] (sampled softmax, TRON);
- `bce`: softplus(-pos) + mean_j softplus(neg_j), the reference's form without its overflow (SASRec);
- `bpr-max`: -log sum_j softmax(neg)_j sigmoid(pos - neg_j) + penalty sum_j softmax(neg)_j neg_j^2 (GRU4Rec+);
- `gbce` (gSASRec): mean over [positive, negatives] of binary cross-entropy with the positive probability
  raised to beta = 1 - t (1 - alpha), alpha = K / (N - 1); computed as beta * softplus(-pos), which is exact
  and cannot overflow. t = 0 gives plain binary cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tron_cli.losses import LOSSES, Loss, finite_at_least
from tron_cli.options import Option

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
        (
            Option(
                "bpr_penalty",
                1.0,
                help="Score regularisation of bpr-max.",
                valid=finite_at_least(0.0),
                requirement="must be a finite number >= 0",
                reference="bpr_penalty",
            ),
        ),
        logq=True,
    ),
)
LOSSES.register(
    "gbce",
    Loss(
        "gbce",
        "generalised binary cross-entropy (gSASRec)",
        lambda pos, neg, valid, c: gbce(pos, neg, valid=valid, t=c.options["gbce_t"], n_items=c.n_items),
        (
            Option(
                "gbce_t",
                0.75,
                help="Calibration t of gbce (0: plain binary cross-entropy).",
                valid=lambda t: isinstance(t, (int, float)) and 0 <= t <= 1,
                requirement="must be in [0, 1]",
            ),
        ),
    ),
)
