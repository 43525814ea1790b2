"""The scorer's blends of a run: fixed by its options, or chosen from grids on the validation split when training ends.

`--transition-weight`, `--knn-weight` (with `--knn-similarity`) and `--repeat-weight` fix a blend's weight; a
grid (`--transition-grid`, `--knn-grid` with `--knn-similarities`, `--repeat-grid`) makes it a choice instead:
after the last epoch, with the selected epoch's weights, every combination of the grids is scored on the
validation split in one pass (`evaluation/grid.py`) and the one with the highest `--blend-select-on` (declared
before training; ties go to the combination listed first, the smaller weights) becomes the run's scorer. The
test split is never read. The grid, every combination's validation metrics and the choice go into summary.json.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import torch

from tron_cli.artifacts.sessions import Dataset
from tron_cli.batching import SessionStore
from tron_cli.errors import UsageError
from tron_cli.evaluation.grid import grid_metrics
from tron_cli.evaluation.procedures import first_sessions, parse_metric
from tron_cli.inference.blends import Blend, Bonus, Context, Repeats
from tron_cli.inference.knn import SIMILARITIES, Neighbours
from tron_cli.inference.scorer import BLEND_KINDS, Scorer
from tron_cli.inference.transitions import Transitions
from tron_cli.reporting import SILENT, Reporter

PARTS = ("transitions", *SIMILARITIES, "repeat")  # the columns of a grid's weights: the prior, each kNN similarity, repeats
REPORTED = (("recall", 20), ("mrr", 20))  # every combination's validation values in summary.json


def parse_criterion(text: str) -> list[tuple[str, int]]:
    """[("recall", 20), ("mrr", 20)] from "recall@20+mrr@20": one metric at a cutoff, or a sum of them."""
    return [parse_metric(term.strip(), "--blend-select-on") for term in str(text).split("+")]


def fixed_blends(config: Any, dataset: Dataset, device: torch.device) -> tuple[Blend, ...]:
    """The blends the options fix (weights > 0), counted on the train split."""
    train, n = dataset.sessions("train"), dataset.n_items
    blends: list[Blend] = []
    if config.transition_weight > 0:
        blends.append(Transitions.counted(train, n, weight=config.transition_weight, smoothing=config.transition_smoothing).to(device))
    if config.knn_weight > 0:
        blends.append(Neighbours.counted(train, n, device, weight=config.knn_weight, similarity=config.knn_similarity))
    if config.repeat_weight > 0:
        blends.append(Repeats(config.repeat_weight))
    return tuple(blends)


def has_grid(config: Any) -> bool:
    return bool(config.transition_grid or config.knn_grid or config.knn_similarities or config.repeat_grid)


@dataclass(frozen=True)
class Point:
    """One combination of the grids."""

    transition_weight: float
    knn_similarity: str
    knn_weight: float
    repeat_weight: float

    def weights(self) -> list[float]:
        """Its row of the weights over `PARTS`."""
        return [self.transition_weight, *(self.knn_weight if self.knn_similarity == name else 0.0 for name in SIMILARITIES), self.repeat_weight]


def points(config: Any) -> list[Point]:
    """Every combination of the grids (a blend without a grid keeps its fixed weight), smaller weights first; kNN
    at weight 0 once, whatever its similarity."""
    transition = sorted(set(config.transition_grid or (config.transition_weight,)))
    knn = sorted(set(config.knn_grid or (config.knn_weight,)))
    similarities = list(dict.fromkeys(config.knn_similarities or (config.knn_similarity,)))
    repeat = sorted(set(config.repeat_grid or (config.repeat_weight,)))
    neighbours = [(similarities[0], 0.0)] if 0.0 in knn else []
    neighbours += [(similarity, weight) for weight in knn if weight > 0 for similarity in similarities]
    return [Point(w, s, k, r) for w, (s, k), r in itertools.product(transition, neighbours, repeat)]


@torch.no_grad()
def choose(model: Any, config: Any, dataset: Dataset, device: torch.device, report: Reporter = SILENT) -> tuple[Scorer, dict[str, Any]]:
    """(the scorer of the best combination, the record for summary.json) on the validation split, with `model` (the
    selected epoch's weights, in eval mode)."""
    if not dataset.has("valid"):
        raise UsageError(f"{dataset.path} has no validation split to choose the blends' weights on", "Drop the grids, or preprocess with a validation split")
    started = time.perf_counter()
    grid = points(config)
    terms = parse_criterion(config.blend_select_on)
    reported = list(dict.fromkeys([*REPORTED, *terms]))
    weights = torch.tensor([point.weights() for point in grid], dtype=torch.float64)
    used = [name for column, name in enumerate(PARTS) if bool((weights[:, column] != 0).any())]
    weights = weights[:, [PARTS.index(name) for name in used]]
    train, n = dataset.sessions("train"), dataset.n_items
    prior = Transitions.counted(train, n, weight=1.0, smoothing=config.transition_smoothing).to(device) if "transitions" in used else None
    neighbours = {name: Neighbours.counted(train, n, device, similarity=name) for name in used if name in SIMILARITIES}

    def parts_of(context: Context) -> dict[str, Bonus]:
        out = {}
        for name in used:
            if name == "transitions":
                assert prior is not None
                out[name] = prior.part(context)
            elif name == "repeat":
                out[name] = Repeats(1.0).part(context)
            else:
                out[name] = neighbours[name].part(context)
        return out

    store = SessionStore(first_sessions(dataset.sessions("valid"), config.valid_limit), device, min_length=2)
    with report.task(f"choosing the blends on validation ({len(grid)} combinations)"):
        values, n_targets = grid_metrics(model, store, last_only=dataset.targets == "last", parts_of=parts_of, names=used, weights=weights, terms=reported)
    score = values[:, [reported.index(term) for term in terms]].sum(1)
    best = grid[int(torch.argmax(score))]  # the first of equal values: the smaller weights
    blends: list[Blend] = []
    if best.transition_weight > 0:
        blends.append(Transitions.counted(train, n, weight=best.transition_weight, smoothing=config.transition_smoothing).to(device))
    if best.knn_weight > 0:
        blends.append(Neighbours.counted(train, n, device, weight=best.knn_weight, similarity=best.knn_similarity))
    if best.repeat_weight > 0:
        blends.append(Repeats(best.repeat_weight))
    names = [f"{metric}@{cutoff}" for metric, cutoff in reported]
    rows = [{**vars(point), **{name: round(float(v), 6) for name, v in zip(names, values[g])}} for g, point in enumerate(grid)]
    chosen = rows[grid.index(best)]
    plain = next((row for row, point in zip(rows, grid) if not any(point.weights())), None)
    record = {
        "select_on": config.blend_select_on,
        "grid": {
            "transition_weight": sorted({p.transition_weight for p in grid}),
            "knn_similarity": list(dict.fromkeys(p.knn_similarity for p in grid if p.knn_weight > 0)),
            "knn_weight": sorted({p.knn_weight for p in grid}),
            "repeat_weight": sorted({p.repeat_weight for p in grid}),
        },
        "chosen": {name: chosen[name] for name in ("transition_weight", "knn_similarity", "knn_weight", "repeat_weight")},
        "valid": {name: chosen[name] for name in names},
        "network_valid": None if plain is None else {name: plain[name] for name in names},
        "n_targets": n_targets,
        "points": rows,
        "seconds": time.perf_counter() - started,
    }
    if best.knn_weight == 0:
        record["chosen"]["knn_similarity"] = None
    return Scorer(model, tuple(sorted(blends, key=lambda b: BLEND_KINDS.index(b.kind)))), record
