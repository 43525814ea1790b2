"""The training losses, declared once in the `LOSSES` registry: name, function, options and help.

A loss is one module of this package (found without a list: `registry.Registry` imports every module here the
first time `LOSSES` is read) that registers a `Loss`. Sampled losses take one signature,
`loss(pos (E,), neg (E, K), valid (E, K) bool, context) -> (E,)`; callers average. `valid` is False where a
negative column is not a negative (an accidental hit that is masked, or a slot that could not be filled); such
columns never contribute, whatever their score. The built-in ones:

- `sampled.py`: `ssm` (TRON's sampled softmax), `bce` (SASRec), `bpr-max` (GRU4Rec+), `gbce` (gSASRec);
- `full.py`: `ce`, softmax over the whole catalogue, chunked, never materialising [E, N];
- `multitron.py`: MultiTRON's two-objective losses (`ssm_and_be`, `ssm_and_distortion`), whose `per_event`
  reads the step's preference vector and the events' order labels from the `LossContext`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from tron_cli.options import Option
from tron_cli.registry import Registry


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


def finite_at_least(low: float) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, (int, float)) and math.isfinite(value) and value >= low


LOSSES: Registry[Loss] = Registry("loss", package="tron_cli.losses", first=("sampled",), options_of=lambda loss: [option.name for option in loss.options])


def all_options() -> dict[str, tuple[Option, list[str]]]:
    """{option name: (declaration, losses that have it)} over every registered loss."""
    out: dict[str, tuple[Option, list[str]]] = {}
    for name, loss in LOSSES.items():
        for option in loss.options:
            out.setdefault(option.name, (option, []))[1].append(name)
    return out
