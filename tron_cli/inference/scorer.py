"""What ranks items at inference: the network's scores plus the blends added to them, one object built where a run
or bundle is loaded (`load_scorer`) or where training validates and chooses its blends (`Scorer(model, blends)`).

A blend scores a few items per row from the session so far (`blends.py`), added to the network's scores outside
training, each with its weight: the transition prior after the last click (`transitions.py`), session kNN over
the train split (`knn.py`) and the repeat boost of the session's own clicks (`blends.Repeats`). Validation,
`tron evaluate`, `tron recommend`, the item index's candidates and the server all rank through a `Scorer` with
each row's `Context` (its session's clicks), so a blend reaches every one of them and nothing reads it off the
network. Runs and bundles store it in one section of their config.json, with each blend's file beside it:

    "scorer": {"blends": [{"kind": "transitions", "weight": 2.0, "smoothing": 0.03, "file": "transitions.safetensors"},
                          {"kind": "knn", "weight": 4.0, "similarity": "sknn", "k": 100, "sample_size": 500, "file": "knn.safetensors"},
                          {"kind": "repeat", "weight": 1.0}]}

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
from tron_cli.inference import knn, transitions
from tron_cli.inference.blends import Blend, Bonus, Context, Repeats, combine
from tron_cli.inference.knn import Neighbours
from tron_cli.inference.transitions import Transitions
from tron_cli.modelio import load_model

BLEND_KINDS = ("transitions", "knn", "repeat")  # the order blends are stored and applied in


@dataclass(frozen=True)
class Scorer:
    """The network (`model`: states and item scores) and the blends added to its scores from each row's session."""

    model: Any  # a SessionModel
    blends: tuple[Blend, ...] = ()  # weights > 0, one of each kind at most

    @property
    def n_items(self) -> int:
        return self.model.n_items

    def blend(self, kind: str) -> Any:
        """The blend of `kind` (`BLEND_KINDS`), or None."""
        return next((blend for blend in self.blends if blend.kind == kind), None)

    def bonus(self, context: Context | None) -> Bonus | None:
        """The blends' weighted sum for each row of `context` (None without blends or context): computed once per
        batch of rows, then read by every chunk of the catalogue."""
        if not self.blends or context is None:
            return None
        return combine([(blend.weight, blend.part(context)) for blend in self.blends], self.n_items, context.last.device)

    def chunk(self, hidden: Tensor, bonus: Bonus | None = None) -> Callable[[int, int], Tensor]:
        """The scores of states `hidden` (Q, d) over the items of a chunk, plus each row's `bonus`."""
        model = self.model
        if bonus is None:
            return lambda start, stop: model.score_all(hidden, start, stop)
        return lambda start, stop: bonus.add_to_chunk(model.score_all(hidden, start, stop), start)

    def items(self, hidden: Tensor, items: Tensor, bonus: Bonus | None = None) -> Tensor:
        """(Q, K) scores of `items` (Q, K) for states `hidden` (Q, d), plus each row's `bonus`."""
        scores = self.model.score(hidden, items)
        if bonus is None:
            return scores
        rows = torch.arange(len(items), device=items.device)[:, None].expand_as(items)
        return scores + bonus.lookup(self.n_items, rows, items).to(scores.dtype)

    def subset(self, states: Tensor, chosen: Tensor, bonus: Bonus | None = None) -> Tensor:
        """(Q, C) fp32 scores of the same `chosen` (C,) items for every state (Q, d): an allow list's chunk."""
        scores = states @ self.model.output_rows(chosen).float().T
        scores = scores if self.model.output_bias is None else scores + self.model.output_bias[chosen, 0].float()
        if bonus is None:
            return scores
        rows = torch.arange(len(states), device=states.device)[:, None].expand(-1, len(chosen))
        return scores + bonus.lookup(self.n_items, rows, chosen.expand(len(states), -1))

    def candidates(self, bonus: Bonus | None, n_rows: int, fetch: int) -> Tensor | None:
        """(Q, fetch) items the blends score highest in each row, which an item index (built from the network's
        vectors alone) cannot know of; None without blends."""
        return None if bonus is None else bonus.best_items(n_rows, fetch)

    def with_blend(self, blend: Blend) -> Scorer:
        """This scorer with `blend` instead of its blend of the same kind (weight 0: without it)."""
        others = [b for b in self.blends if b.kind != blend.kind] + ([blend] if blend.weight > 0 else [])
        return Scorer(self.model, tuple(sorted(others, key=lambda b: BLEND_KINDS.index(b.kind))))

    def with_transitions(self, weight: float, train: Sessions) -> Scorer:
        """This scorer with the transition prior at `weight` (0 drops it): its own counts re-weighted, or counted on
        `train` when it has none."""
        prior = self.blend("transitions")
        if prior is None:
            prior = Transitions.counted(train, self.n_items, weight=1.0).to(self.model.item_embedding.device)
        return self.with_blend(prior.reweighted(weight))

    def section(self) -> dict[str, Any]:
        """The `scorer` section of a run's or bundle's config.json."""
        return {"blends": [blend.section() for blend in self.blends]}

    def save_files(self, directory: Path, catalogue: str | None) -> list[str]:
        """Write the files the blends need into `directory` (a run dir); returns their names."""
        names = []
        for blend in self.blends:
            if isinstance(blend, Transitions):
                transitions.save(directory / transitions.FILE, blend.keys.cpu(), blend.probabilities.cpu(), catalogue)
                names.append(transitions.FILE)
            elif isinstance(blend, Neighbours):
                knn.save(directory / knn.FILE, blend, catalogue)
                names.append(knn.FILE)
        return names


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def blend_sections(document: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The blends a run's or bundle's config.json records (weights > 0), each checked, from its `scorer` section or,
    written before it, a run's train options or a bundle's `transitions` object."""
    redo = f"Re-run: {MADE_BY[kind]}"
    scorer = document.get("scorer")
    if isinstance(scorer, dict):
        blends = scorer.get("blends")
        if not isinstance(blends, list) or not all(isinstance(b, dict) and b.get("kind") in BLEND_KINDS for b in blends):
            raise ArtifactError(f"the scorer section of a {kind} holds {blends!r}, not a list of blends ({', '.join(BLEND_KINDS)})", redo)
        if len({b["kind"] for b in blends}) < len(blends):
            raise ArtifactError(f"the scorer section of a {kind} holds two blends of one kind: {blends!r}", redo)
        sections = [dict(b) for b in blends]
    elif kind == "bundle":
        section = document.get("transitions") or {}
        sections = [{"kind": "transitions", "weight": section.get("weight", 0.0), "smoothing": section.get("smoothing", transitions.DEFAULT_SMOOTHING)}]
    else:
        train = document.get("train") or {}
        weight, smoothing = train.get("transition_weight", 0.0), train.get("transition_smoothing", transitions.DEFAULT_SMOOTHING)
        sections = [{"kind": "transitions", "weight": weight, "smoothing": smoothing}]
    for section in sections:
        if section["kind"] == "transitions":
            section.setdefault("smoothing", transitions.DEFAULT_SMOOTHING)
        numbers = [section.get("weight")] + ([section["smoothing"]] if section["kind"] == "transitions" else [])
        if not all(_number(v) for v in numbers) or section["weight"] < 0 or (section["kind"] == "transitions" and section["smoothing"] <= 0):
            raise ArtifactError(f"the {section['kind']} blend of a {kind} is {section!r}: its weight must be a number >= 0", redo)
        if section["kind"] == "knn":
            counts = [section.get("k"), section.get("sample_size")]
            if section.get("similarity") not in knn.SIMILARITIES or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in counts):
                raise ArtifactError(f"the knn blend of a {kind} is {section!r}: similarity sknn or vsknn, k and sample_size integers >= 1", redo)
    return [section for section in sections if section["weight"] > 0]


def read_blends(path: Path, document: dict[str, Any], kind: str, n_items: int, device: torch.device | str = "cpu") -> tuple[Blend, ...]:
    """The blends a run or bundle at `path` scores with, their files checked."""
    out: list[Blend] = []
    for section in blend_sections(document, kind):
        if section["kind"] == "repeat":
            out.append(Repeats(float(section["weight"])))
            continue
        name = transitions.FILE if section["kind"] == "transitions" else knn.FILE
        where = Path(path) / name
        if not where.is_file():
            raise ArtifactError(f"{where} is missing (the {kind} scores with a {section['kind']} blend)", f"Re-run: {MADE_BY[kind]}")
        weight = float(section["weight"])
        if section["kind"] == "transitions":
            out.append(transitions.load(where, kind, n_items=n_items, weight=weight, smoothing=float(section["smoothing"]), device=device))
        else:
            settings = {"weight": weight, "similarity": section["similarity"], "k": section["k"], "sample_size": section["sample_size"]}
            out.append(knn.load(where, kind, n_items=n_items, settings=settings, device=device))
    return tuple(sorted(out, key=lambda b: BLEND_KINDS.index(b.kind)))


def load_scorer(path: Path, device: torch.device | str | None = None) -> tuple[Scorer, dict[str, Any], str]:
    """(scorer, config document, kind) of a run dir or a bundle: the network in eval mode and its blends."""
    model, document, kind = load_model(path, device)
    return Scorer(model, read_blends(path, document, kind, n_items=model.n_items, device=device or "cpu")), document, kind
