"""The learning rate per step: constant, or a linear warmup then a cosine or linear decay to zero over the run.

The schedule is attached to the optimisers as a post-step hook, so the training step itself does not change:
after step s the rate of step s + 1 is set. It is a function of the global step alone, which the checkpoint
stores, so a resumed run continues on the same curve (the optimisers' saved param groups hold the same rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

SCHEDULES = ("constant", "cosine", "linear")


def factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """The multiplier of the base rate at `step` (0-based) of `total` steps, after `warmup` linear warmup steps."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def attach(optimizers: list[torch.optim.Optimizer], base_lr: float, schedule: str, warmup: int, total: int, global_step: Callable[[], int]) -> None:
    """Set the rate of the next step now and after every optimiser step; `global_step()` counts the steps done."""
    if schedule == "constant" and warmup == 0:
        return

    def set_rate() -> None:
        rate = base_lr * factor(schedule, global_step(), total, warmup)
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = rate

    def after_step(optimizer, args, kwargs) -> None:
        if optimizer is optimizers[-1]:  # once per training step, after the last optimiser stepped
            rate = base_lr * factor(schedule, global_step() + 1, total, warmup)
            for each in optimizers:
                for group in each.param_groups:
                    group["lr"] = rate

    set_rate()
    optimizers[-1].register_step_post_hook(after_step)
