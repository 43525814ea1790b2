"""The pareto stage: a MultiTRON run's click/order front, one evaluation per preference vector.

The order weight pi_o of the preference [1 - pi_o, pi_o] takes `points + 1` evenly spaced values
0, 1/points, ..., 1 (the reference spaces them by a Beta quantile, which crowds the ends; even spacing puts
the same share of the sweep everywhere and makes fronts of different runs comparable point by point). At
each value every target of the split is ranked against the whole catalogue (no random negatives, so the
front is deterministic) and scored as `tron evaluate` does: click Recall@20 and MRR@20, MultiTRON's order
recall@20 and order density@20 as global ratios. The hypervolume of the (click Recall@20, order recall@20)
points against the reference point (0, 0) summarises the front in one number (`evaluation.metrics.hypervolume`).
Writes RUN/pareto.json (schema pareto/1).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from tron_cli.artifacts.documents import write_json
from tron_cli.artifacts.schemas import schema_tag
from tron_cli.artifacts.sessions import read_dataset
from tron_cli.batching import SessionStore
from tron_cli.choices import SPLITS
from tron_cli.errors import MissingInputError, UsageError
from tron_cli.evaluation.metrics import hypervolume
from tron_cli.evaluation.procedures import EvalOptions, accumulate, first_sessions
from tron_cli.inference.scorer import load_scorer
from tron_cli.modelio import check_same_catalogue, dataset_of
from tron_cli.reporting import SILENT, Reporter
from tron_cli.runtime import resolve_device
from tron_cli.workspace import home

CUTOFF = 20
METRICS = (f"recall@{CUTOFF}", f"mrr@{CUTOFF}", f"order_recall@{CUTOFF}", f"order_density@{CUTOFF}")
AXES = (f"recall@{CUTOFF}", f"order_recall@{CUTOFF}")  # the front's two objectives: the hypervolume's coordinates
REFERENCE_POINT = (0.0, 0.0)


def order_weights(points: int) -> list[float]:
    """The swept order weights: points + 1 evenly spaced values from 0 to 1."""
    if points < 1:
        raise UsageError("--points must be at least 1")
    return [i / points for i in range(points + 1)]


def pareto(
    run: Path | None,
    data: Path | None = None,
    points: int = 25,
    split: str = "test",
    device: str = "auto",
    limit: float = 1.0,
    report: Reporter = SILENT,
) -> dict[str, Any]:
    """Run the stage: the front as a dict (schema pareto/1), also written to RUN/pareto.json."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}", f"Use one of: {', '.join(SPLITS)}")
    weights = order_weights(points)
    run_dir = Path(run) if run is not None else home.latest_run()
    torch_device = resolve_device(device)
    scorer, document, _ = load_scorer(run_dir, torch_device)
    model = scorer.model
    if not model.preference_input:
        raise UsageError(f"{run_dir} reads no preference vector: it has one point, not a front", "Train one: tron train --objective multitron")
    dataset = read_dataset(data if data is not None else dataset_of(document, run_dir))
    check_same_catalogue(document, dataset, run_dir)
    store = SessionStore(first_sessions(dataset.sessions(split), limit), torch_device, min_length=2)
    if len(store) == 0:
        raise MissingInputError(f"{dataset.path}/{split}.parquet has no session with a target")
    if store.ordered is None:
        raise UsageError(f"{dataset.path} has no orders: the order metrics of a front need them", "Pass --data with the run's own dataset")
    options = EvalOptions(split=split, cutoffs=(CUTOFF,))
    front = []
    with report.task("sweeping the order weight", total=len(weights)) as task:
        for weight in weights:
            model.use_order_weight(weight)
            values = accumulate(scorer, store, dataset.targets == "last", options).result()
            front.append({"order_weight": weight, **{name: values[name] for name in METRICS}})
            task.update(advance=1)
    result = {
        "schema": schema_tag("pareto"),
        "run": str(run_dir),
        "dataset": str(dataset.path),
        "split": split,
        "spacing": "even",
        "axes": list(AXES),
        "reference_point": list(REFERENCE_POINT),
        "hypervolume": hypervolume([(point[AXES[0]], point[AXES[1]]) for point in front], REFERENCE_POINT),
        "n_targets": values["n_targets"],
        "n_ordered": values["n_ordered"],
        "points": front,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(run_dir / "pareto.json", result, kind="pareto")
    return result
