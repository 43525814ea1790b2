"""The evaluate stage: every target of every session, ranked against the whole catalogue.

Protocol `all` (default): each target of the untruncated session is scored from the `max_length` clicks
before it (a right-aligned window whose last state is read, as `tron recommend` does), and the metrics are
exact micro-averages over targets. For leave-one-out datasets only each session's last item is a target.
Protocol `tron` reproduces the reference: one pass over the last max_length + 1 clicks of each session,
sessions in batches of the run's batch size, the last partial batch dropped, the mean of batch means.
Baselines without a model: `popular` (train click counts) and `markov` (first-order transitions from train,
ties broken by popularity).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tron_cli import artifacts, home
from tron_cli.artifacts import Dataset
from tron_cli.batching import SessionStore
from tron_cli.errors import ArtifactError, MissingInputError, UsageError
from tron_cli.metrics import Accumulator
from tron_cli.metrics import rank_targets
from tron_cli.reporting import SILENT, Reporter
from tron_cli.runtime import exact_fp32, resolve_device

PROTOCOLS = ("all", "tron")
BASELINES = ("popular", "markov")


@dataclass(frozen=True)
class EvalOptions:
    split: str = "test"
    cutoffs: tuple[int, ...] = (5, 10, 20)
    ties: str = "pessimistic"
    protocol: str = "all"
    exclude_seen: bool = False
    bootstrap: int = 0
    seed: int = 0
    chunk_size: int = 65536
    query_batch: int = 0  # 0: 1024 on CPU, 8192 on CUDA
    limit: float = 1.0  # a fraction (<= 1) or a number (> 1) of sessions to evaluate


def first_sessions(sessions: artifacts.Sessions, limit: float) -> artifacts.Sessions:
    """The first sessions: a fraction of them (limit <= 1) or a number (limit > 1)."""
    n = len(sessions) if limit >= len(sessions) else (int(limit) if limit > 1 else math.ceil(limit * len(sessions)))
    return sessions if n >= len(sessions) else sessions.select(np.arange(n))


def _seen_pairs(store: SessionStore, positions: Tensor) -> tuple[Tensor, Tensor]:
    """(rows, items): every click before each target position in its session (to exclude from the ranking)."""
    starts = store.offsets[store.session_of(positions)]
    counts = positions - starts
    rows = torch.repeat_interleave(torch.arange(len(positions), device=positions.device), counts)
    ends = torch.cumsum(counts, 0)
    offsets_in_row = torch.arange(int(ends[-1]) if len(ends) else 0, device=positions.device) - torch.repeat_interleave(ends - counts, counts)
    return rows, store.items[starts[rows] + offsets_in_row]


def _finish(accumulator: Accumulator, options: EvalOptions) -> dict[str, Any]:
    result = accumulator.result()
    if options.bootstrap:
        result.update(accumulator.bootstrap(options.bootstrap, options.seed))
    return result


def _rank(scorer, hidden: Tensor, targets: Tensor, n_items: int, options: EvalOptions, excluded=None) -> Tensor:
    hidden = hidden.float()
    target_scores = scorer.score(hidden, targets[:, None]).squeeze(1).float()
    return rank_targets(lambda a, b: scorer.score_all(hidden, a, b), target_scores, targets, n_items, options.chunk_size, options.ties, excluded)


@torch.no_grad()
def accumulate(model, store: SessionStore, n_items: int, last_only: bool, options: EvalOptions, report: Reporter = SILENT) -> Accumulator:
    """Per-session metric sums of `model` (SASRec or GRU4Rec) on the sessions in `store`, protocol `all`."""
    with exact_fp32():
        accumulator = Accumulator(len(store), options.cutoffs, store.device)
        if hasattr(model, "blocks"):
            _windows_protocol(model, store, n_items, last_only, options, accumulator, report)
        else:
            _recurrent_protocol(model, store, n_items, last_only, options, accumulator, report)
        return accumulator


@torch.no_grad()
def evaluate_model(model, store: SessionStore, n_items: int, last_only: bool, options: EvalOptions, batch_size: int = 128, report: Reporter = SILENT) -> dict[str, Any]:
    """Metrics of `model` on the sessions in `store` (micro-averages, or the reference's with protocol tron)."""
    if options.protocol == "tron":
        with exact_fp32():
            return _tron_protocol(model, store, n_items, options, batch_size, report)
    return _finish(accumulate(model, store, n_items, last_only, options, report), options)


def _query_batch(options: EvalOptions, device: torch.device) -> int:
    return options.query_batch or (8192 if device.type == "cuda" else 1024)


def _windows_protocol(model, store, n_items, last_only, options, accumulator, report) -> None:
    """SASRec: one right-aligned window of preceding clicks per target; the last state predicts it."""
    max_length = model.config.max_length
    positions = store.target_positions(last_only)
    # shortest contexts first, so that each batch of windows is only as wide as its longest context
    context = (positions - store.offsets[store.session_of(positions)]).clamp(max=max_length)
    positions = positions[torch.argsort(context, stable=True)]
    sessions = store.session_of(positions)
    starts = store.offsets[sessions]
    step = _query_batch(options, store.device)
    with report.task("evaluating", total=len(positions)) as task:
        for first in range(0, len(positions), step):
            chunk = slice(first, first + step)
            width = int((positions[chunk] - starts[chunk]).clamp(max=max_length).max())
            windows = store.query_windows(positions[chunk], width)
            hidden = model.last_hidden(windows)
            excluded = _seen_pairs(store, positions[chunk]) if options.exclude_seen else None
            ranks = _rank(model, hidden, store.items[positions[chunk]], n_items, options, excluded)
            accumulator.add(ranks, sessions[chunk])
            task.update(advance=len(ranks))


def _recurrent_protocol(model, store, n_items, last_only, options, accumulator, report) -> None:
    """GRU4Rec: one pass per session over all its clicks; the state after click j predicts click j+1."""
    step = max(1, _query_batch(options, store.device) // 16)
    with report.task("evaluating", total=len(store)) as task:
        for first in range(0, len(store), step):
            index = torch.arange(first, min(first + step, len(store)), device=store.device)
            lengths = store.lengths[index]
            width = int(lengths.max())
            column = torch.arange(width, device=store.device)
            real = column < lengths[:, None]  # right-padded: (B, W)
            source = (store.offsets[index][:, None] + column).clamp(max=store.n_events - 1)
            items = torch.where(real, store.items[source], 0)
            hidden = model(items)  # (B, W, d)
            is_target = real[:, 1:] & ((column[1:] == lengths[:, None] - 1) if last_only else True)
            rows, cols = is_target.nonzero(as_tuple=True)  # target at column cols + 1, predicted by state cols
            positions = store.offsets[index][rows] + cols + 1
            excluded = _seen_pairs(store, positions) if options.exclude_seen else None
            ranks = _rank(model, hidden[rows, cols], items[rows, cols + 1], n_items, options, excluded)
            accumulator.add(ranks, index[rows])
            task.update(advance=len(index))


def _tron_protocol(model, store, n_items, options, batch_size, report) -> dict[str, Any]:
    """The reference's evaluation, for parity checks (see the module docstring)."""
    if options.exclude_seen or options.bootstrap:
        raise UsageError("--protocol tron reproduces the reference: it has no --exclude-seen or --bootstrap")
    if not hasattr(model, "blocks"):
        raise UsageError("--protocol tron is defined for SASRec runs")
    width = model.config.max_length + 1
    n_batches = len(store) // batch_size
    names, batch_means, n_targets = None, [], 0
    with report.task("evaluating (tron protocol)", total=n_batches) as task:
        for b in range(n_batches):
            index = torch.arange(b * batch_size, (b + 1) * batch_size, device=store.device)
            sequence = store.tail_windows(index, width)
            inputs, targets = sequence[:, :-1], sequence[:, 1:]
            hidden = model(inputs)
            mask = inputs != 0
            ranks = _rank(model, hidden[mask], targets[mask], n_items, options)
            accumulator = Accumulator(1, options.cutoffs, store.device)
            accumulator.add(ranks, torch.zeros_like(targets[mask]))
            result = accumulator.result()
            names = [k for k in result if k != "n_targets"]
            batch_means.append([result[k] for k in names])
            n_targets += result["n_targets"]
            task.update(advance=1)
    if not batch_means:
        raise UsageError(f"--protocol tron needs at least one full batch of {batch_size} sessions; the split has {len(store)}")
    means = np.mean(np.array(batch_means), axis=0).tolist()
    return {**dict(zip(names, means)), "n_targets": n_targets}


# ------------------------------------------------------------------------------------------------ baselines


@torch.no_grad()
def evaluate_baseline(kind: str, dataset: Dataset, store: SessionStore, last_only: bool, options: EvalOptions, report: Reporter = SILENT) -> dict[str, Any]:
    """`popular`: score = train clicks; `markov`: score = (transitions from the previous click, clicks)."""
    if kind not in BASELINES:
        raise UsageError(f"unknown baseline {kind!r}", f"Use one of: {', '.join(BASELINES)}")
    if options.protocol != "all":
        raise UsageError("baselines are evaluated with --protocol all")
    device = store.device
    n = dataset.n_items
    counts = torch.from_numpy(np.asarray(dataset.items().column("count"), dtype=np.float64)).to(device)
    popularity = torch.cat([torch.zeros(1, dtype=torch.float64, device=device), counts])  # (N+1,), index = dense id
    if kind == "markov":
        train = dataset.sessions("train")
        flat = torch.from_numpy(train.items.astype(np.int64)).to(device)
        follows = torch.ones(len(flat), dtype=torch.bool, device=device)
        follows[torch.from_numpy(train.offsets[:-1]).to(device)] = False  # a session's first click follows nothing
        pair = flat[:-1][follows[1:]] * (n + 1) + flat[1:][follows[1:]]
        keys, transition_counts = torch.unique(pair, return_counts=True)  # sorted (prev, next) pairs
        weight = float(popularity.max()) + 1.0  # transitions first, popularity breaks ties: exact in float64
    positions = store.target_positions(last_only)
    sessions = store.session_of(positions)
    accumulator = Accumulator(len(store), options.cutoffs, device)
    step = _query_batch(options, device)
    with report.task(f"evaluating the {kind} baseline", total=len(positions)) as task:
        for first in range(0, len(positions), step):
            chunk = positions[first : first + step]
            targets = store.items[chunk]
            rows_all = torch.arange(len(chunk), device=device)
            if kind == "popular":
                target_scores = popularity[targets]

                def score_chunk(a, b, q=len(chunk)):
                    return popularity[a:b].expand(q, -1).clone()

            else:
                previous = store.items[chunk - 1]
                lo = torch.searchsorted(keys, previous * (n + 1))
                hi = torch.searchsorted(keys, previous * (n + 1) + n + 1)
                row_counts = hi - lo
                rows = torch.repeat_interleave(rows_all, row_counts)
                ends = torch.cumsum(row_counts, 0)
                entry = lo[rows] + torch.arange(int(ends[-1]) if len(ends) else 0, device=device) - torch.repeat_interleave(ends - row_counts, row_counts)
                nexts, bonus = keys[entry] % (n + 1), transition_counts[entry].double() * weight
                key = previous * (n + 1) + targets
                found = torch.searchsorted(keys, key).clamp(max=len(keys) - 1)
                target_scores = popularity[targets] + torch.where(keys[found] == key, transition_counts[found].double() * weight, 0.0)

                def score_chunk(a, b, q=len(chunk), rows=rows, nexts=nexts, bonus=bonus):
                    scores = popularity[a:b].expand(q, -1).clone()
                    inside = (nexts >= a) & (nexts < b)
                    scores.index_put_((rows[inside], nexts[inside] - a), bonus[inside], accumulate=True)
                    return scores

            excluded = _seen_pairs(store, chunk) if options.exclude_seen else None
            ranks = rank_targets(score_chunk, target_scores, targets, n, options.chunk_size, options.ties, excluded)
            accumulator.add(ranks, sessions[first : first + step])
            task.update(advance=len(chunk))
    return _finish(accumulator, options)


# ------------------------------------------------------------------------------------------------ the stage


def check_same_catalogue(document: dict[str, Any], dataset: Dataset, where: Path) -> None:
    """A model scores its own catalogue: refuse a dataset whose items differ from the run's."""
    trained = document.get("dataset", {})
    if not isinstance(trained, dict):  # a bundle names its dataset and carries the fingerprint itself
        trained = {"name": trained, "catalogue_sha256": document.get("catalogue_sha256")}
    if trained.get("catalogue_sha256") != dataset.info.get("catalogue_sha256") or document["model"]["n_items"] != dataset.n_items:
        raise ArtifactError(
            f"{where} was trained on dataset {trained.get('name')!r} ({document['model']['n_items']} items), not on {dataset.path} ({dataset.n_items} items)",
            "Pass --data with the run's own dataset",
        )


def evaluate(model_path: Path | None, data: Path | None, options: EvalOptions, baseline: str | None = None, device: str = "auto", report: Reporter = SILENT) -> dict[str, Any]:
    """Run the stage: metrics as a dict (also written to the run's metrics.json when a model was evaluated)."""
    from tron_cli.modelio import load_model

    torch_device = resolve_device(device)
    if options.split not in ("test", "valid"):
        raise UsageError(f"unknown split {options.split!r}", "Use --split test or --split valid")
    if any(k < 1 for k in options.cutoffs):
        raise UsageError("cutoffs (-k) must be at least 1")
    model = document = None
    if baseline is None:
        model_path = Path(model_path) if model_path else home.latest_run()
        model, document, kind = load_model(model_path, torch_device)
        if data is None:
            trained = document.get("dataset")
            # a run records its dataset's path; a bundle only its name, looked up under $TRON_HOME/data/
            data = Path(trained["path"]) if isinstance(trained, dict) else home.datasets_root() / trained if isinstance(trained, str) else None
            if data is None or not data.exists():
                raise MissingInputError(f"the dataset of {model_path} is not at {data}", "Pass --data DIR")
    elif data is None:
        data = home.latest_dataset()
    dataset = artifacts.read_dataset(data)
    if document is not None:
        check_same_catalogue(document, dataset, model_path)
    sessions = first_sessions(dataset.sessions(options.split), options.limit)
    store = SessionStore(sessions, torch_device, min_length=2)
    if len(store) == 0:
        raise MissingInputError(f"{dataset.path}/{options.split}.parquet has no session with a target")
    last_only = dataset.targets == "last"
    if baseline is not None:
        result = evaluate_baseline(baseline, dataset, store, last_only, options, report)
    else:
        batch_size = int(document.get("train", {}).get("batch_size", 128))
        result = evaluate_model(model, store, dataset.n_items, last_only, options, batch_size, report)
    result = {**result, "split": options.split, "protocol": options.protocol, "ties": options.ties, "exclude_seen": options.exclude_seen, "dataset": str(dataset.path)}
    if baseline is not None:
        result["baseline"] = baseline
    elif kind == "run":
        artifacts.write_json(
            model_path / "metrics.json",
            {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "metrics": result},
            kind="metrics",
        )
    return result
