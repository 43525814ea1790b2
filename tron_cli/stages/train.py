"""The train stage: a dataset in, a run dir out (config.json, model.safetensors, history.jsonl, checkpoint/,
summary.json), on one device, on N local processes (`devices`, torch's elastic launcher) or under torchrun.

The loop is `training/loop.py`; this module decides the run dir, the config (a new one, or a resumed run's
with the few options that may change), and starts the ranks.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from tron_cli import errors, tracking
from tron_cli.artifacts.documents import read_json, read_jsonl
from tron_cli.artifacts.files import check_replaceable
from tron_cli.artifacts.lineage import resolve
from tron_cli.artifacts.sessions import Dataset, read_dataset
from tron_cli.errors import ArtifactError, TronError, UsageError
from tron_cli.modelio import check_weights, model_of
from tron_cli.models import model_section
from tron_cli.reporting import SILENT, Reporter
from tron_cli.training import distributed
from tron_cli.training.config import TrainConfig, fit_hints, validate
from tron_cli.training.loop import Trainer
from tron_cli.training.run import execute, run_document
from tron_cli.training.rundir import run_lock
from tron_cli.training.warmstart import Origin, check_origin, read_origin, warm_start
from tron_cli.workspace import home

RESUMABLE_OVERRIDES = {"epochs", "device", "early_stopping", "valid_limit", "precision", "compile", "track"}


@dataclass
class TrainRequest:
    config: TrainConfig
    data: Path | None = None
    out: Path | None = None
    resume: Path | None = None
    force: bool = False
    reference_config: dict[str, Any] | None = None
    overrides: tuple[str, ...] = ()  # options given explicitly (only some may change on --resume)
    devices: int = 1  # local processes for data-parallel training
    init_from: Path | None = None  # a run or bundle whose weights the run starts from (training/warmstart.py)


def _resume_config(request: TrainRequest, document: dict[str, Any]) -> TrainConfig:
    changed = sorted(set(request.overrides) - RESUMABLE_OVERRIDES)
    if changed:
        raise UsageError(
            f"--{changed[0].replace('_', '-')} cannot change when resuming", f"Only {', '.join(sorted(RESUMABLE_OVERRIDES))} can; start a new run for the rest"
        )
    stored = TrainConfig.from_document({**document, "model": model_of(document)})
    return validate(replace(stored, **{name: getattr(request.config, name) for name in request.overrides}))


def prepare_run_dir(request: TrainRequest, check: bool = True) -> Path:
    """The run dir this request trains into, after checking (with `check`) it may be (re)written; creates nothing."""
    if request.resume is not None:
        return Path(request.resume)
    data = Path(request.data) if request.data else home.latest_dataset()
    if request.out:
        run_dir = Path(request.out)
    else:
        run_dir = home.new_run_dir(f"{read_dataset(data).name}-{request.config.model}")
    if check and run_dir.exists() and any(p.name != ".lock" for p in run_dir.iterdir()) and not request.force:
        raise UsageError(f"{run_dir} exists already", "Pass --force to replace it, --resume to continue it, or another --out")
    if check:
        check_replaceable(run_dir, "run", inputs=(data, *([_parent(request.init_from)] if request.init_from is not None else [])))
    return run_dir


def _parent(init_from: Path) -> Path:
    """The run or bundle of --init-from: a path, or a name (the bundle of that name first, then the run)."""
    return resolve(init_from, {"bundle": home.bundles_root(), "run": home.runs_root()}, "--init-from")


def train(request: TrainRequest, report: Reporter = SILENT) -> dict[str, Any]:
    """Run the stage; returns the summary, also in summary.json. With `request.devices` > 1, starts that many
    local processes (each runs `train` as one rank); under torchrun, this process is one rank."""
    if request.devices > 1:
        return _launch(request, report)
    ranks = distributed.from_environment(request.config.device)
    # rank 0 checks and names the run dir; the others must be told it (--out, or --resume)
    if not (ranks.main or request.resume is not None or request.out):
        raise UsageError("with torchrun, give every rank the run dir: --out DIR")
    run_dir = prepare_run_dir(request, check=ranks.main)
    restart = False
    origin = None
    if request.resume is not None and request.init_from is not None:
        raise UsageError("--resume continues a run from its checkpoint (or from the parent its config.json names): drop --init-from")
    if request.resume is not None:
        document = read_json(run_dir / "config.json", "run")
        config = _resume_config(request, document)
        dataset = read_dataset(Path(document["dataset"]["path"]))
        if dataset.info.get("catalogue_sha256") != document["dataset"].get("catalogue_sha256"):
            raise ArtifactError(f"the dataset of {run_dir} changed since training started ({dataset.path})", "Start a new run")
        finished = _finished(run_dir, config)
        if finished is not None:
            report.info(finished.pop("nothing to do"))
            return finished
        restart = _restart(run_dir, dataset)
        if restart and isinstance(document.get("init_from"), dict):  # killed before its first checkpoint: start from the parent again
            origin = read_origin(Path(document["init_from"]["path"]))
        if not restart:  # the checkpoint's weights must fit this run's model and catalogue before the model takes memory
            section = model_section(config.model, config.network, dataset.n_items)
            check_weights(run_dir / "checkpoint" / "weights.safetensors", "checkpoint", section, dataset.info.get("catalogue_sha256"))
    else:
        config = request.config
        dataset = read_dataset(Path(request.data) if request.data else home.latest_dataset())
        if request.init_from is not None:
            origin = read_origin(_parent(request.init_from))
    validate(config, dataset.n_items)
    new_items = 0 if origin is None else check_origin(origin, model_section(config.model, config.network, dataset.n_items), dataset)
    if config.objective == "multitron" and "orders" not in dataset.extra_types:
        raise UsageError(
            f"--objective multitron learns from orders, and {dataset.path} has none (dataset.json extra_types: {list(dataset.extra_types)})",
            "Preprocess a log with orders: OTTO, yoochoose-buys.dat, train-purchases.csv, or --type-col with --order-types",
        )
    tracking.check(config.track)
    lock = run_lock(run_dir) if ranks.main else contextlib.nullcontext()
    with lock:
        trainer = Trainer(config, dataset, run_dir=run_dir, report=report, ranks=ranks)
        if request.resume is not None and not restart:  # before the run dir changes: a failed resume leaves a finished run finished
            trainer.restore()
        elif origin is not None:
            _warm_start(trainer, origin, new_items, report)
        if restart and ranks.main:
            report.warn(f"{run_dir} stopped before its first epoch ended (no checkpoint): training it again from the start, with its config.json")
        if request.resume is None and ranks.main:
            for hint in fit_hints(config, dataset.n_items, trainer.device.type, torch.get_num_threads()):
                report.warn(hint)
        new = None if request.resume is not None else run_document(run_dir, trainer, dataset=dataset, config=config, reference_config=request.reference_config)
        if new is not None and origin is not None:
            new["init_from"] = origin.record(new_items)
        summary = execute(trainer, new)
    return summary


def _warm_start(trainer: Trainer, origin: Origin, new_items: int, report: Reporter) -> None:
    """The trainer's model from the parent's weights (every rank alike: new rows start from the same seed)."""
    warm_start(trainer.model, origin)
    if trainer.ranks.main:
        rows = f"{new_items:,} new items start from the mean of its item rows plus initial noise" if new_items else "no new item"
        report.info(f"warm start from {origin.path}: every weight and the rows of its {origin.n_items:,} items; {rows}")


def _finished(run_dir: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The summary of a finished run that already has the epochs asked for (with "nothing to do" saying so),
    or None when resuming has work to do; such a run is left as it is."""
    state_path = run_dir / "checkpoint" / "state.json"
    if not ((run_dir / "summary.json").is_file() and state_path.is_file()):
        return None
    state = read_json(state_path, "checkpoint")
    if state["done"] or state["epoch"] < config.epochs:
        return None
    summary = {k: v for k, v in read_json(run_dir / "summary.json", "summary").items() if k not in ("schema", "tron_version")}
    summary["nothing to do"] = (
        f"{run_dir} has trained {state['epoch']} epochs, and --epochs {config.epochs} asks for no more: nothing to do, nothing changed"
        f" (tron train --resume {run_dir} --epochs {state['epoch'] + 1} trains one more)"
    )
    return summary


def _restart(run_dir: Path, dataset: Dataset) -> bool:
    """Whether a resumed run without a checkpoint starts again from its first epoch: it stopped (killed) before its
    first epoch ended, so nothing was saved but config.json. A run that had saved more is refused."""
    if (run_dir / "checkpoint" / "state.json").is_file():
        return False
    saved = [name for name in ("model.safetensors", "summary.json") if (run_dir / name).is_file()] + (
        ["history.jsonl"] if read_jsonl(run_dir / "history.jsonl") else []
    )
    if not saved:
        return True
    raise ArtifactError(
        f"{run_dir} has no checkpoint to resume from (only {', '.join(saved)})",
        f"Train it again from the start with its settings: tron train {dataset.path} --config {run_dir / 'config.json'} --out {run_dir} --force",
    )


# ------------------------------------------------------------------------------------------------ N local processes


def _rank_main(request: TrainRequest, error_path: str) -> dict[str, Any]:
    """One rank of `_launch` (a separate process): train, and leave rank 0's one-line error for the parent."""
    rank = int(os.environ.get("RANK", "0"))
    try:
        return train(replace(request, devices=1))
    except TronError as error:
        if rank == 0:
            with open(error_path, "w") as handle:
                handle.write(f"{type(error).__name__}\n{error.line()}")
        raise SystemExit(error.exit_code) from None
    finally:
        distributed.leave()


def _launch(request: TrainRequest, report: Reporter) -> dict[str, Any]:
    """Run `train` in `request.devices` local processes; returns rank 0's summary."""
    devices = request.devices
    if (request.config.device == "cuda" or (request.config.device == "auto" and torch.cuda.is_available())) and torch.cuda.device_count() < devices:
        raise UsageError(f"--devices {devices}, but only {torch.cuda.device_count()} CUDA devices are visible")
    run_dir = prepare_run_dir(request)
    if request.resume is None:
        request = replace(request, out=run_dir, force=True)
    report.info(f"training on {devices} processes ({'NCCL' if torch.cuda.is_available() and request.config.device != 'cpu' else 'gloo'}) into {run_dir}")
    with tempfile.TemporaryDirectory() as scratch:
        error_path = os.path.join(scratch, "error")
        if not distributed.launch(_rank_main, (request, error_path), devices):
            if os.path.exists(error_path):
                kind, message = Path(error_path).read_text().split("\n", 1)
                raise getattr(errors, kind, TronError)(message.rstrip("."))
            raise TronError(f"a training process failed (see its output above); the run dir {run_dir} keeps the last checkpoint")
    summary = read_json(run_dir / "summary.json", "summary")
    return {k: v for k, v in summary.items() if k not in ("schema", "tron_version")}
