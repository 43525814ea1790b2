"""Experiment tracking: MLflow and TensorBoard record a run as it trains, declared once in `TRACKERS`.

A tracker is opened by the train stage (rank 0 only) around the training loop and told of each epoch's end
and of the run's end through the loop's callbacks (`training/callbacks.py`): the resolved config as
parameters, per-epoch loss, validation metrics and throughput, the final summary, and at the end the run's
config.json, history.jsonl and curves PNG as artifacts. `tron evaluate` adds its metrics to the tracked run.
Which run a tracker wrote to is kept in the run dir's `tracking.json`, so a resumed run and a later
evaluation write to the same one.

- `mlflow`: a local store under $TRON_HOME (mlflow.db, artifacts in mlartifacts/), or the server or database
  in MLFLOW_TRACKING_URI; experiment = `tron-DATASET` (or MLFLOW_EXPERIMENT_NAME), run name = the run dir's.
- `tensorboard`: event files in RUN/tensorboard/ (`tensorboard --logdir runs/`).

Both libraries are optional extras (`tron-cli[mlflow]`, `tron-cli[tensorboard]`), imported only when asked for.
Metric keys are the same in both: `loss`, `valid/recall_at_20`, ..., `sessions_per_s`, `test/mrr_at_20`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tron_cli.artifacts.documents import read_json, read_jsonl, write_json
from tron_cli.databases import DIALECTS, check_writable
from tron_cli.errors import ArtifactError, TronError
from tron_cli.registry import Registry
from tron_cli.workspace import home

RECORD = "tracking.json"  # in the run dir: {tracker: what it needs to find its run again}
NUMBERS = ("loss", "sessions_per_s", "events_per_s", "seconds")  # per-epoch values of history.jsonl besides `valid`


def metric_key(name: str, prefix: str = "") -> str:
    """`recall@20` -> `valid/recall_at_20`: MLflow refuses '@' in keys, so both trackers use this spelling."""
    return prefix + name.replace("@", "_at_")


def epoch_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one history.jsonl line under their tracker keys."""
    out = {key: float(record[key]) for key in NUMBERS if isinstance(record.get(key), (int, float))}
    out.update({metric_key(name, "valid/"): float(value) for name, value in (record.get("valid") or {}).items()})
    return out


def flat_params(document: dict[str, Any]) -> dict[str, str]:
    """The run's resolved config as flat parameters: `train.*` and `model.*` from config.json, plus the dataset."""
    out = {f"train.{key}": str(value) for key, value in (document.get("train") or {}).items()}
    out.update({f"model.{key}": str(value) for key, value in (document.get("model") or {}).items()})
    dataset = document.get("dataset") or {}
    out.update({f"dataset.{key}": str(dataset[key]) for key in ("name", "path", "n_items") if key in dataset})
    return out


def curves_figure(run_dir: Path) -> Any | None:
    """The run's loss and validation curves (`tron plot`'s figure), or None without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        return None
    from tron_cli import charts  # the curves are tron plot's; imported only here, where a tracker asks for them

    return charts.build_figure([run_dir])


class TrackedRun:
    """One tracker's view of one run: what the loop's callbacks and `tron evaluate` call."""

    def epoch_end(self, record: dict[str, Any]) -> bool:
        return False

    def finish(self, summary: dict[str, Any]) -> None: ...

    def log_evaluation(self, metrics: dict[str, float], prefix: str) -> None: ...

    def close(self, failed: bool) -> None: ...


@dataclass(frozen=True)
class Tracker:
    name: str
    summary: str  # one line for --help and docs
    module: str  # the library it needs
    extra: str  # pip extra that installs it
    # open(run_dir, document of config.json, what tracking.json kept of an earlier session or None) -> (run, what to keep)
    open: Callable[[Path, dict[str, Any], dict[str, Any] | None], tuple[TrackedRun, dict[str, Any]]]

    def require(self) -> None:
        """Fail with one line (and install hint) when the tracker's library is missing."""
        if importlib.util.find_spec(self.module) is None:
            raise TronError(f"--track {self.name} needs {self.module}, which is not installed", f"Run: pip install 'tron-cli[{self.extra}]'")


TRACKERS: Registry[Tracker] = Registry("tracker")


# ------------------------------------------------------------------------------------------------ MLflow


class _MlflowRun(TrackedRun):
    def __init__(self, client: Any, run_id: str, run_dir: Path):
        self.client, self.run_id, self.run_dir = client, run_id, run_dir

    def epoch_end(self, record: dict[str, Any]) -> bool:
        from mlflow.entities import Metric

        stamp = _millis()
        metrics = [Metric(key, value, stamp, int(record["epoch"])) for key, value in epoch_metrics(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)
        return False

    def finish(self, summary: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp = _millis()
        numbers = {f"summary/{key}": value for key, value in summary.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
        numbers.update({metric_key(name, "summary/valid/"): value for name, value in (summary.get("valid") or {}).items()})
        self.client.log_batch(self.run_id, metrics=[Metric(key, float(value), stamp, 0) for key, value in numbers.items()])
        self.client.set_tag(self.run_id, "selected_by", str(summary.get("selected_by")))
        for name in ("config.json", "history.jsonl"):
            self.client.log_artifact(self.run_id, str(self.run_dir / name))
        figure = curves_figure(self.run_dir)
        if figure is not None:
            self.client.log_figure(self.run_id, figure, "training.png")

    def log_evaluation(self, metrics: dict[str, float], prefix: str) -> None:
        from mlflow.entities import Metric

        stamp = _millis()
        self.client.log_batch(self.run_id, metrics=[Metric(metric_key(k, prefix), float(v), stamp, 0) for k, v in metrics.items()])

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def _millis() -> int:
    import time

    return int(time.time() * 1000)


def mlflow_uri() -> str:
    """MLFLOW_TRACKING_URI, else a local SQLite store under $TRON_HOME (MLflow 3 refuses new file stores)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home.home().resolve() / 'mlflow.db'}"


def _open_mlflow(run_dir: Path, document: dict[str, Any], kept: dict[str, Any] | None) -> tuple[TrackedRun, dict[str, Any]]:
    from mlflow.tracking import MlflowClient

    uri = kept["tracking_uri"] if kept else mlflow_uri()
    client = MlflowClient(tracking_uri=uri)
    if kept:
        client.update_run(kept["run_id"], status="RUNNING")
        return _MlflowRun(client, kept["run_id"], run_dir), kept
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"tron-{(document.get('dataset') or {}).get('name', 'runs')}"
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    elif uri.startswith("sqlite:"):  # artifacts beside the local database, not in the working directory
        experiment_id = client.create_experiment(name, artifact_location=(home.home().resolve() / "mlartifacts").as_uri())
    else:
        experiment_id = client.create_experiment(name)
    run = client.create_run(experiment_id, run_name=run_dir.name, tags={"tron.run_dir": str(run_dir.resolve())})
    from mlflow.entities import Param

    params = [Param(key, value[:6000]) for key, value in flat_params(document).items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
        client.log_batch(run.info.run_id, params=params[start : start + 100])
    return _MlflowRun(client, run.info.run_id, run_dir), {"tracking_uri": uri, "run_id": run.info.run_id, "experiment": name}


# ------------------------------------------------------------------------------------------------ TensorBoard


class _TensorBoardRun(TrackedRun):
    def __init__(self, writer: Any, run_dir: Path, last_step: int):
        self.writer, self.run_dir, self.last_step = writer, run_dir, last_step

    def epoch_end(self, record: dict[str, Any]) -> bool:
        self.last_step = int(record["epoch"])
        for key, value in epoch_metrics(record).items():
            self.writer.add_scalar(key, value, self.last_step)
        self.writer.flush()
        return False

    def finish(self, summary: dict[str, Any]) -> None:
        numbers = {f"summary/{key}": value for key, value in summary.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
        numbers.update({metric_key(name, "summary/valid/"): value for name, value in (summary.get("valid") or {}).items()})
        for key, value in numbers.items():
            self.writer.add_scalar(key, float(value), self.last_step)
        figure = curves_figure(self.run_dir)
        if figure is not None:
            self.writer.add_figure("training", figure, self.last_step)
        self.writer.flush()

    def log_evaluation(self, metrics: dict[str, float], prefix: str) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(metric_key(key, prefix), float(value), self.last_step)
        self.writer.flush()

    def close(self, failed: bool) -> None:
        self.writer.close()


def _open_tensorboard(run_dir: Path, document: dict[str, Any], kept: dict[str, Any] | None) -> tuple[TrackedRun, dict[str, Any]]:
    from torch.utils.tensorboard import SummaryWriter

    log_dir = run_dir / "tensorboard"
    writer = SummaryWriter(log_dir=str(log_dir))
    if not kept:
        params = flat_params(document)
        writer.add_text("config", "\n".join(f"    {key} = {value}" for key, value in sorted(params.items())), 0)
    history = run_dir / "history.jsonl"
    epochs = len(read_jsonl(history)) if history.is_file() else 0  # evaluation scalars go at the last epoch
    return _TensorBoardRun(writer, run_dir, epochs), {"log_dir": str(log_dir)}


TRACKERS.register("mlflow", Tracker("mlflow", "MLflow: $TRON_HOME/mlflow.db, or MLFLOW_TRACKING_URI", module="mlflow", extra="mlflow", open=_open_mlflow))
TRACKERS.register(
    "tensorboard", Tracker("tensorboard", "TensorBoard event files in RUN/tensorboard/", module="tensorboard", extra="tensorboard", open=_open_tensorboard)
)


# ------------------------------------------------------------------------------------------------ opening and closing


def _kept(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RECORD
    return read_json(path, "tracking") if path.is_file() else {}


def check(names: tuple[str, ...]) -> None:
    """Every named tracker is known and installed, and MLflow's store (a database) can be written, before any
    training starts."""
    for name in names:
        TRACKERS.get(name, "--track").require()
    if "mlflow" in names:
        uri, hint = mlflow_uri(), "Set MLFLOW_TRACKING_URI to a store tron can write, or train without --track mlflow"
        if uri.split(":", 1)[0].split("+", 1)[0] in DIALECTS:
            check_writable(uri, "the MLflow store", hint)
        from mlflow.tracking import MlflowClient

        try:  # MLflow sets up (or migrates) its store on first use: a store of something else fails here, not mid-run
            with _quiet("mlflow", "alembic"):
                MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as error:  # any library's error, from any kind of store: said in one line
            raise TronError(f"the MLflow store {uri} cannot be used: {str(error).splitlines()[0] if str(error) else type(error).__name__}", hint) from None


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Only warnings from these libraries' loggers while the block runs (MLflow reports setting up its tables)."""
    import logging

    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def tracked(names: tuple[str, ...], run_dir: Path) -> Iterator[list[TrackedRun]]:
    """The open trackers of a run (its config.json written) while it trains; a run that fails or is
    interrupted is marked FAILED."""
    check(names)
    kept = _kept(run_dir) if names else {}
    document = read_json(run_dir / "config.json", "run") if names else {}
    runs = []
    for name in names:
        run, keep = TRACKERS.get(name).open(run_dir, document, kept.get(name))
        kept[name] = keep
        runs.append(run)
    if names:
        write_json(run_dir / RECORD, {k: v for k, v in kept.items() if k not in ("schema", "tron_version")}, kind="tracking")
    failed = True
    try:
        yield runs
        failed = False
    finally:
        for run in runs:
            run.close(failed)


def log_evaluation(run_dir: Path, names: tuple[str, ...], metrics: dict[str, Any], split: str) -> list[str]:
    """Add an evaluation's metrics (`test/recall_at_20`, ...; `evaluate_valid/...` for the validation split) to
    the trackers that recorded `run_dir`, or to `names` when given; returns the trackers written to."""
    try:
        kept = _kept(run_dir)
    except ArtifactError:
        kept = {}
    chosen = names or tuple(name for name in kept if name in TRACKERS)
    if not chosen:
        return []
    check(chosen)
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    document = read_json(run_dir / "config.json", "run")
    for name in chosen:
        run, keep = TRACKERS.get(name).open(run_dir, document, kept.get(name))
        kept[name] = keep
        run.log_evaluation(numbers, "test/" if split == "test" else f"evaluate_{split}/")  # valid/ is the per-epoch series
        run.close(False)
    if chosen:
        write_json(run_dir / RECORD, {k: v for k, v in kept.items() if k not in ("schema", "tron_version")}, kind="tracking")
    return list(chosen)
