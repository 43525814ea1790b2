"""The evaluate stage: every target of a split ranked against the whole catalogue, for a model or a baseline.

The protocols are in `evaluation/procedures.py` (every target of every untruncated session by default; `tron` for parity
with the reference), the baselines in `evaluation/baselines.py`. A run's metrics are also written to its metrics.json.
`--retrieval index` measures a bundle's item index against exact scoring instead (`procedures.compare_retrieval`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tron_cli import tracking
from tron_cli.artifacts.documents import write_json
from tron_cli.artifacts.sessions import Dataset, read_dataset
from tron_cli.batching import SessionStore
from tron_cli.choices import DEFAULT_ORDER_WEIGHT, PROTOCOLS, RETRIEVALS, SPLITS, TIES
from tron_cli.errors import MissingInputError, OutputError, UsageError
from tron_cli.evaluation.baselines import BASELINES, evaluate_baseline
from tron_cli.evaluation.procedures import EvalOptions, compare_retrieval, evaluate_model, first_sessions, otto_protocol
from tron_cli.inference.predictor import load_predictor
from tron_cli.inference.retrieval import Retriever
from tron_cli.inference.scorer import Scorer, load_scorer
from tron_cli.modelio import check_same_catalogue, dataset_of, read_model_dir
from tron_cli.reporting import SILENT, Reporter
from tron_cli.runtime import resolve_device
from tron_cli.workspace import home
from tron_cli.workspace.inventory import weights_stamp


def evaluate(
    model_path: Path | None,
    data: Path | None,
    options: EvalOptions,
    baseline: str | None = None,
    device: str = "auto",
    report: Reporter = SILENT,
    baseline_options: dict[str, Any] | None = None,
    track: tuple[str, ...] = (),
    retrieval: str = "exact",
    index_params: tuple[str, ...] = (),
    order_weight: float | None = None,
    transition_weight: float | None = None,
) -> dict[str, Any]:
    """Run the stage: metrics as a dict (also written to the run's metrics.json when a model was evaluated, and
    to the run's trackers: those it was trained with, or `track`). `transition_weight` scores with that weight of
    the transition prior instead of the run's (0: without it), counting it on the run's train split if the run
    has none: a weight is chosen on the validation split without training again.

    With `retrieval="index"`, a bundle's top-K lists through its item index next to exact scoring's, and their
    overlap (`procedures.compare_retrieval`); nothing is written."""
    torch_device = resolve_device(device)
    if options.split not in SPLITS:
        raise UsageError(f"unknown split {options.split!r}", f"Use one of: {', '.join(SPLITS)}")
    if options.protocol not in PROTOCOLS:
        raise UsageError(f"unknown protocol {options.protocol!r}", f"Use one of: {', '.join(PROTOCOLS)}")
    if options.ties not in TIES:
        raise UsageError(f"unknown tie policy {options.ties!r}", f"Use one of: {', '.join(TIES)}")
    if any(k < 1 for k in options.cutoffs):
        raise UsageError("cutoffs (-k) must be at least 1")
    if transition_weight is not None and not 0 <= transition_weight < float("inf"):
        raise UsageError(f"--transition-weight {transition_weight} is not a finite number >= 0")
    if baseline is not None:
        if transition_weight is not None:
            raise UsageError("--transition-weight weights a model's transition prior; a baseline has none")
        return _evaluate_baseline(baseline, data, options=options, device=torch_device, report=report, baseline_options=baseline_options or {})
    if baseline_options:
        raise UsageError("--baseline-option needs --baseline")
    if retrieval not in RETRIEVALS:
        raise UsageError(f"unknown retrieval {retrieval!r}", f"Use one of: {', '.join(RETRIEVALS)}")
    tracking.check(track)
    model_path = Path(model_path) if model_path else home.latest_run()
    if retrieval == "index":
        return _evaluate_index(
            model_path, data, options=options, device=torch_device, index_params=index_params, report=report, transition_weight=transition_weight
        )
    if index_params:
        raise UsageError("--index-param tunes the index of --retrieval index")
    document, _ = read_model_dir(model_path)  # the dataset is compared first: its message says what to pass
    dataset = read_dataset(data if data is not None else dataset_of(document, model_path))
    check_same_catalogue(document, dataset, model_path)
    options = dataset_defaults(options, dataset)
    scorer, document, kind = load_scorer(model_path, torch_device)
    if transition_weight is not None:
        scorer = scorer.with_transitions(transition_weight, dataset.sessions("train"))
    model = scorer.model
    if order_weight is not None and not model.preference_input:
        raise UsageError(f"{model_path} reads no preference vector: --order-weight needs a model trained with --objective multitron")
    if model.preference_input:
        model.use_order_weight(DEFAULT_ORDER_WEIGHT if order_weight is None else order_weight)
    if options.protocol == "otto":
        metrics = _otto(scorer, dataset, options=options, device=torch_device, report=report)
    else:
        batch_size = int(document.get("train", {}).get("batch_size", 128))
        metrics = evaluate_model(
            scorer, _store(dataset, options, torch_device), last_only=dataset.targets == "last", options=options, batch_size=batch_size, report=report
        )
    result = {**metrics, **_about(options, dataset)}
    if options.limit != 1.0:
        result["limit"] = options.limit
    if model.preference_input:
        result["order_weight"] = DEFAULT_ORDER_WEIGHT if order_weight is None else order_weight
    prior = scorer.blend("transitions")
    if prior is not None or transition_weight is not None:
        result["transition_weight"] = 0.0 if prior is None else prior.weight
    result.update({f"{blend.kind}_weight": blend.weight for blend in scorer.blends if blend.kind != "transitions"})
    if kind == "run":
        # what was computed is the result: a run dir that cannot be written into (read-only, a full disk) costs
        # the record, not the metrics, which are still printed
        try:
            write_json(
                model_path / "metrics.json",
                {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "weights": weights_stamp(model_path), "metrics": result},
                kind="metrics",
            )
        except OutputError as error:
            report.warn(f"metrics.json was not saved ({error.message}); the metrics are printed only")
            return result
        tracking.log_evaluation(model_path, track, {k: v for k, v in result.items() if "@" in k or k == "n_targets"}, options.split)
    return result


def _otto(scorer: Scorer, dataset: Dataset, options: EvalOptions, device: torch.device, report: Reporter) -> dict[str, Any]:
    """OTTO's own task on the split (`procedures.otto_protocol`): it needs the split's carts and orders."""
    if not dataset.extra_types:
        raise UsageError(
            f"--protocol otto scores carts and orders, and {dataset.path} keeps none",
            "Preprocess an OTTO-format log again (tron preprocess keeps carts and orders since sessions schema 2)",
        )
    counts = np.asarray(dataset.items().column("count"), dtype=np.int64)
    popular = torch.from_numpy(np.argsort(-counts, kind="stable") + 1).to(device)  # dense ids, most clicked first
    return otto_protocol(scorer, first_sessions(dataset.sessions(options.split), options.limit), popular=popular, options=options, report=report)


def _evaluate_index(
    model_path: Path,
    data: Path | None,
    options: EvalOptions,
    device: torch.device,
    index_params: tuple[str, ...],
    report: Reporter,
    transition_weight: float | None = None,
) -> dict[str, Any]:
    if options.protocol != "all" or options.bootstrap:
        raise UsageError("--retrieval index compares top-k lists with protocol all, without --bootstrap")
    document, kind = read_model_dir(model_path)
    if kind != "bundle" or not isinstance(document.get("index"), dict):
        raise UsageError(f"{model_path} has no item index", "Export one: tron export --index hnsw (or ivf, exact), then evaluate the bundle")
    predictor = load_predictor(model_path, device, index_params=index_params)
    dataset = read_dataset(data if data is not None else dataset_of(document, model_path))
    check_same_catalogue(document, dataset, model_path)
    options = dataset_defaults(options, dataset)
    retriever = predictor.retriever
    if transition_weight is not None:
        retriever = Retriever(retriever.scorer.with_transitions(transition_weight, dataset.sessions("train")), retriever.index)
    store = _store(dataset, options, device)
    assert predictor.index is not None
    report.detail(f"{model_path}: {predictor.index.describe()}")
    result = compare_retrieval(retriever, store=store, last_only=dataset.targets == "last", options=options, report=report)
    return {**result, "index": {**result["index"], "kind": predictor.index.kind, "search": predictor.index.search_params}, **_about(options, dataset)}


def _evaluate_baseline(
    baseline: str, data: Path | None, options: EvalOptions, device: torch.device, report: Reporter, baseline_options: dict[str, Any]
) -> dict[str, Any]:
    dataset = read_dataset(data if data is not None else home.latest_dataset())
    options = dataset_defaults(options, dataset)
    store = _store(dataset, options, device)
    metrics = evaluate_baseline(
        baseline, dataset, store=store, last_only=dataset.targets == "last", options=options, report=report, baseline_options=baseline_options
    )
    return {**metrics, **_about(options, dataset), "baseline": baseline, "baseline_options": BASELINES.get(baseline).resolve(baseline_options)}


def dataset_defaults(options: EvalOptions, dataset: Dataset) -> EvalOptions:
    """`options` with what they leave open (`exclude_seen` None) taken from the dataset's own protocol: seen items
    leave the ranking of leave-one-out data, as they did in the validation that chose the run's epoch. The
    reference's and OTTO's protocols score as those do, with every item."""
    if options.exclude_seen is not None:
        return options
    return replace(options, exclude_seen=bool(dataset.evaluation["exclude_seen"]) if options.protocol == "all" else False)


def _store(dataset: Dataset, options: EvalOptions, device: torch.device) -> SessionStore:
    """The sessions of the split to score, on the device."""
    sessions = first_sessions(dataset.sessions(options.split), options.limit)
    store = SessionStore(sessions, device, min_length=2)
    if len(store) == 0:
        raise MissingInputError(f"{dataset.path}/{options.split}.parquet has no session with a target")
    return store


def _about(options: EvalOptions, dataset: Dataset) -> dict[str, Any]:
    """What a result was computed on, beside the metrics."""
    about = {"split": options.split, "protocol": options.protocol, "ties": options.ties, "exclude_seen": options.exclude_seen, "dataset": str(dataset.path)}
    if options.split == "test" and "unknown_test_targets" in dataset.info:
        about["unknown_test_targets"] = dataset.info["unknown_test_targets"]
    return about
