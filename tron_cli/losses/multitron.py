"""MultiTRON's two objectives (Wilm, Normann, Stepprath, RecSys 2024): the next click and a second objective,
traded off by a preference vector beta = [pi_click, pi_second] that the model also reads.

Per event, with pos (E,) the positive score, neg (E, K) the kept negative scores and valid (E, K):
- `ssm_and_be`: [sampled softmax of the click, binary cross-entropy of the same positive score against the
  event's order label (the clicked item is ordered later in the session)];
- `ssm_and_distortion`: [sampled softmax, cross-entropy of softmax([pos, neg]) against a uniform target];
- `approx_epo`: the reference's "approximate EPO" regulariser, which pulls the beta-weighted losses towards
  equal shares: p = beta * l / max(sum(beta * l), 1e-6), then cross-entropy of softmax(p) against [1/2, 1/2]
  (so its floor is ln 2, not 0: a quirk kept for parity, see ../shared/docs/multitron-reference.md).
The reference reduces each as sum over real events / number of real events; so do the callers here.

Both are registered as two-objective losses (`losses.LOSSES`): per event, beta . losses + regularization *
approx_epo, whose mean over events is the reference's total.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tron_cli.losses import LOSSES, Loss, LossContext
from tron_cli.losses.sampled import ssm
from tron_cli.options import Option

EPO_FLOOR = 1e-6  # the reference's clip of the weighted sum


def click_and_order(pos: Tensor, neg: Tensor, valid: Tensor, ordered: Tensor) -> Tensor:
    """(E, 2): [sampled softmax, BCE of the positive score against `ordered` (E,) in {0, 1}]."""
    return torch.stack([ssm(pos, neg, valid), F.binary_cross_entropy_with_logits(pos, ordered.to(pos.dtype), reduction="none")], dim=-1)


def click_and_distortion(pos: Tensor, neg: Tensor, valid: Tensor) -> Tensor:
    """(E, 2): [sampled softmax, cross-entropy of softmax over [pos, valid negatives] against uniform]."""
    logits = torch.cat([pos.unsqueeze(-1), neg.masked_fill(~valid, float("-inf"))], dim=-1)  # (E, K + 1)
    slots = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=-1)
    mean_logit = logits.masked_fill(~slots, 0.0).sum(-1) / slots.sum(-1)
    return torch.stack([ssm(pos, neg, valid), torch.logsumexp(logits, dim=-1) - mean_logit], dim=-1)


def approx_epo(losses: Tensor, beta: Tensor) -> Tensor:
    """(E,): the regulariser of each event's two losses (E, 2) under preference `beta` (2,) or (E, 2)."""
    weighted = losses * beta
    shares = weighted / weighted.sum(-1, keepdim=True).clamp(min=EPO_FLOOR)
    return torch.logsumexp(shares, dim=-1) - shares.mean(-1)


def total(losses: Tensor, beta: Tensor, regularization: float) -> tuple[Tensor, Tensor, Tensor]:
    """(total, mean losses (2,), mean regulariser) over events: beta . mean(losses) + regularization * mean(epo)."""
    means = losses.mean(0)  # (2,)
    epo = approx_epo(losses, beta).mean()
    return (means * beta).sum() + regularization * epo, means, epo


def combined(losses: Tensor, context: LossContext) -> Tensor:
    """(E,): beta . losses + regularization * approx_epo per event, beta the step's preference (2,)."""
    if context.preference is None:
        raise ValueError("a two-objective loss needs the step's preference vector")
    beta = context.preference.to(losses.dtype)
    return (losses * beta).sum(-1) + context.options["regularization"] * approx_epo(losses, beta)


def _order_loss(pos: Tensor, neg: Tensor, valid: Tensor, context: LossContext) -> Tensor:
    if context.ordered is None:
        raise ValueError("ssm_and_be needs the order label of each event")
    return combined(click_and_order(pos, neg, valid, context.ordered), context)


_REGULARIZATION = Option(
    "regularization",
    0.5,
    help="Weight of the approximate-EPO regulariser of MultiTRON's losses.",
    reference="regularization_penalty",
    valid=lambda value: isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
    requirement="must be a number >= 0",
)
LOSSES.register(
    "ssm_and_be",
    Loss(
        "ssm_and_be",
        "MultiTRON: sampled softmax of the click and binary cross-entropy of the same score against the order label",
        _order_loss,
        (_REGULARIZATION,),
        objectives=("click", "order"),
        needs_orders=True,
    ),
)
LOSSES.register(
    "ssm_and_distortion",
    Loss(
        "ssm_and_distortion",
        "MultiTRON: sampled softmax and the distortion of softmax([positive, negatives]) from uniform",
        lambda pos, neg, valid, c: combined(click_and_distortion(pos, neg, valid), c),
        (_REGULARIZATION,),
        objectives=("click", "distortion"),
    ),
)
