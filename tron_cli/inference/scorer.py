"""What ranks items at inference: the network's scores plus the blends added to them, one object built where a run
or bundle is loaded (`load_scorer`) or where training validates (`Scorer(model, blends)`).

A blend is a score known from a row's last click, added to the network's outside training; today the transition
prior (`transitions.py`). Validation, `tron evaluate`, `tron recommend`, the item index's candidates and the
server all rank through a `Scorer`, so a blend reaches every one of them and nothing reads it off the network.
Runs and bundles store it in one section of their config.json, with each blend's file beside it:

    "scorer": {"blends": [{"kind": "transitions", "weight": 2.0, "smoothing": 0.03, "file": "transitions.safetensors"}]}

Runs and bundles written before that section kept the prior in `train.transition_weight` (a run) or a
`transitions` object (a bundle); both are still read. `tron evaluate --transition-weight W` builds a new scorer
with another weight (`with_transitions`); nothing is changed in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tron_cli.artifacts.schemas import MADE_BY
from tron_cli.artifacts.sessions import Sessions
from tron_cli.errors import ArtifactError
from tron_cli.inference import transitions
from tron_cli.inference.transitions import Transitions
from tron_cli.modelio import load_model


@dataclass(frozen=True)
class Scorer:
    """The network (`model`: states and item scores) and the blends added to its scores after a row's last click."""

    model: Any  # a SessionModel
    prior: Transitions | None = None  # the transition prior, the one blend there is

    @property
    def n_items(self) -> int:
        return self.model.n_items

    def chunk(self, hidden: Tensor, previous: Tensor | None = None) -> Callable[[int, int], Tensor]:
        """The scores of states `hidden` (Q, d) over the items of a chunk, plus the blends after each row's
        `previous` (Q,) click (none without it)."""
        prior, model = self.prior, self.model
        if prior is None or previous is None:
            return lambda start, stop: model.score_all(hidden, start, stop)
        return lambda start, stop: prior.add_to_chunk(model.score_all(hidden, start, stop), previous, start)

    def items(self, hidden: Tensor, items: Tensor, previous: Tensor | None = None) -> Tensor:
        """(Q, K) scores of `items` (Q, K) for states `hidden` (Q, d), plus the blends after `previous` (Q,)."""
        scores = self.model.score(hidden, items)
        if self.prior is None or previous is None:
            return scores
        return scores + self.prior.pair_bonus(previous, items).to(scores.dtype)

    def subset(self, states: Tensor, chosen: Tensor, previous: Tensor | None = None) -> Tensor:
        """(Q, C) fp32 scores of the same `chosen` (C,) items for every state (Q, d): an allow list's chunk."""
        scores = states @ self.model.output_rows(chosen).float().T
        scores = scores if self.model.output_bias is None else scores + self.model.output_bias[chosen, 0].float()
        if self.prior is None or previous is None:
            return scores
        return scores + self.prior.pair_bonus(previous, chosen.expand(len(previous), -1))

    def candidates(self, previous: Tensor, fetch: int) -> Tensor | None:
        """(Q, fetch) items the blends score highly after each row's `previous` click, which an item index (built
        from the network's vectors alone) cannot know of; None without blends."""
        return None if self.prior is None else self.prior.best_successors(previous, fetch)

    def with_transitions(self, weight: float, train: Sessions) -> Scorer:
        """This scorer with the transition prior at `weight` (0 drops it): its own counts re-weighted, or counted on
        `train` when it has none."""
        if weight == 0:
            return Scorer(self.model)
        if self.prior is not None:
            return Scorer(self.model, self.prior.reweighted(weight))
        device = self.model.item_embedding.device
        return Scorer(self.model, Transitions.counted(train, self.n_items, weight=weight).to(device))

    def section(self) -> dict[str, Any]:
        """The `scorer` section of a run's or bundle's config.json."""
        blends = (
            [] if self.prior is None else [{"kind": "transitions", "weight": self.prior.weight, "smoothing": self.prior.smoothing, "file": transitions.FILE}]
        )
        return {"blends": blends}


def blend_settings(document: dict[str, Any], kind: str) -> tuple[float, float]:
    """(weight, smoothing) of the transition prior a run's or bundle's config.json records (weight 0: none), from
    its `scorer` section or, written before it, a run's train options or a bundle's `transitions` object."""
    scorer = document.get("scorer")
    if isinstance(scorer, dict):
        blends = scorer.get("blends")
        if not isinstance(blends, list) or not all(isinstance(b, dict) and b.get("kind") == "transitions" for b in blends) or len(blends) > 1:
            raise ArtifactError(f"the scorer section of a {kind} holds {blends!r}, not a list of one transition prior or none", f"Re-run: {MADE_BY[kind]}")
        section = blends[0] if blends else {"weight": 0.0}
        weight, smoothing = section.get("weight", 0.0), section.get("smoothing", transitions.DEFAULT_SMOOTHING)
    elif kind == "bundle":
        section = document.get("transitions") or {}
        weight, smoothing = section.get("weight", 0.0), section.get("smoothing", transitions.DEFAULT_SMOOTHING)
    else:
        train = document.get("train") or {}
        weight, smoothing = train.get("transition_weight", 0.0), train.get("transition_smoothing", transitions.DEFAULT_SMOOTHING)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (weight, smoothing))
    if not numbers or weight < 0 or smoothing <= 0:
        raise ArtifactError(f"the transition prior of a {kind} is weight {weight!r}, smoothing {smoothing!r}", f"Re-run: {MADE_BY[kind]}")
    return float(weight), float(smoothing)


def read_prior(path: Path, document: dict[str, Any], kind: str, n_items: int, device: torch.device | str = "cpu") -> Transitions | None:
    """The transition prior a run or bundle at `path` scores with, its file checked; None when it has none."""
    weight, smoothing = blend_settings(document, kind)
    if weight == 0:
        return None
    where = Path(path) / transitions.FILE
    if not where.is_file():
        raise ArtifactError(f"{where} is missing (the {kind} scores with a transition prior)", f"Re-run: {MADE_BY[kind]}")
    return transitions.load(where, kind, n_items=n_items, weight=weight, smoothing=smoothing, device=device)


def load_scorer(path: Path, device: torch.device | str | None = None) -> tuple[Scorer, dict[str, Any], str]:
    """(scorer, config document, kind) of a run dir or a bundle: the network in eval mode and its blends."""
    model, document, kind = load_model(path, device)
    return Scorer(model, read_prior(path, document, kind, n_items=model.n_items, device=device or "cpu")), document, kind
