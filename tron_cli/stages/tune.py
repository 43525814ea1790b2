"""The tune stage: an Optuna study of `tron train` options on a dataset's validation split (never on test).

Each trial samples options from a search space (TPE), trains a normal run dir (`runs/STUDY-trial-N`) through
the same loop as `tron train`, reports each epoch's validation metric to Optuna and is stopped early when the
median pruner finds it weak (the loop's epoch-end callback). The study lives in a database: by default SQLite
at `$TRON_HOME/tune/STUDY/study.db`, so running `tron tune` again resumes it; several processes on several
machines share one study through a common database URL (`--storage postgresql://...`, Optuna's own
distributed mode). `--trials` is the study's total of finished trials, whoever ran them. At the end the best
trial's options are written as `tune/STUDY/best.json`, a file `tron train --config` takes.

A search space is a JSON or TOML file with up to two tables (docs/tuning.md):

    [fixed]                               # options every trial takes
    epochs = 6
    [search]                              # options sampled per trial
    lr = {low = 1e-4, high = 3e-3, log = true}     # a float (or int) range
    hidden_size = [64, 128, 200]                   # a choice

Option names are `tron train`'s (`TrainConfig.create`'s flat names); each value is checked against the
option's type before the study starts.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tron_cli.artifacts.documents import write_json
from tron_cli.artifacts.sessions import Dataset, read_dataset
from tron_cli.databases import check_writable
from tron_cli.errors import InputFormatError, MissingInputError, TronError, UsageError
from tron_cli.evaluation.procedures import parse_metric
from tron_cli.models import MODELS
from tron_cli.options import declared, search_space
from tron_cli.reporting import SILENT, Reporter
from tron_cli.safe_json import JsonRefused, parse
from tron_cli.training.config import TRAIN_OPTIONS, TrainConfig, option_defaults, validate
from tron_cli.training.loop import Trainer
from tron_cli.training.run import execute, run_document
from tron_cli.training.rundir import run_lock
from tron_cli.workspace import home

# A space for TRON (SASRec + shared negatives + sampled softmax) that a CPU can search in an hour on a small
# dataset: what matters most on session data (rate, regularisation, size, how long a session is read,
# negatives) with choices that always combine (every size divides by every head count; top-k <= negatives).
# The searched options and their ranges are declared beside each option (`tune=`, training/config.py and
# models/sasrec.py); these are the options every trial of the default space fixes.
DEFAULT_FIXED: dict[str, Any] = {"epochs": 4, "bucket_window": 32, "shuffle": "shuffle_without_replacement", "batch_negatives": 127}
SPACE_MODEL = "sasrec"  # the model whose settings the default space searches


def default_space() -> dict[str, Any]:
    """The default search space: the fixed options above, and every training option and SASRec setting that
    declares a `tune` range."""
    declarations = [*TRAIN_OPTIONS.values(), *declared(MODELS.get(SPACE_MODEL).config_class).values()]
    return {"fixed": DEFAULT_FIXED, "search": search_space(declarations)}


STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass(frozen=True)
class Dimension:
    """One searched option: a range (`low`, `high`, `log`, `step`) or a list of `choices`."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int) and (self.step is None or isinstance(self.step, int)):
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, float(self.low or 0), float(self.high or 0), log=self.log, step=self.step)


@dataclass(frozen=True)
class Space:
    fixed: dict[str, Any]
    search: tuple[Dimension, ...]


@dataclass
class TuneRequest:
    data: Path | None = None
    space: Path | None = None  # None: default_space()
    trials: int = 20  # finished trials the study should have in all
    timeout: float | None = None  # seconds for this process; a running trial stops at its next epoch end (and keeps its best epoch)
    metric: str = "recall@20"  # validation metric to maximise (and prune on)
    study: str | None = None  # default: tune-DATASET
    storage: str | None = None  # default: sqlite under $TRON_HOME/tune/STUDY/
    overrides: tuple[tuple[str, Any], ...] = ()  # fixed options given on the command line (win over the file)
    seed: int = 0


def _check_value(where: str, name: str, value: Any) -> Any:
    """A value of option `name`, of the option's type (ints where it takes ints, ...)."""
    defaults = option_defaults()
    if name not in defaults:
        raise UsageError(f"{where}: {name!r} is not a tron train option", "Use the names of `tron train --help` with underscores, e.g. hidden_size")
    default = defaults[name]
    if default is None or isinstance(default, bool) or not isinstance(default, (int, float)):
        ok = default is None or isinstance(value, type(default))
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    if not ok:
        raise UsageError(f"{where}: {name} takes {type(default).__name__} values, not {value!r}")
    return value


def parse_space(document: dict[str, Any], where: str = "search space") -> Space:
    """A `Space` from a parsed file: `fixed` and `search` tables (or only searched options at the top)."""
    if not isinstance(document, dict):
        raise UsageError(f"{where}: must be a table of options")
    if not set(document) <= {"fixed", "search"}:
        document = {"search": document}
    fixed = {name: _check_value(f"{where} [fixed]", name, value) for name, value in (document.get("fixed") or {}).items()}
    search = []
    for name, spec in (document.get("search") or {}).items():
        at = f"{where} [search] {name}"
        if isinstance(spec, list):
            if not spec:
                raise UsageError(f"{at}: an empty list of choices")
            search.append(Dimension(name, choices=tuple(_check_value(at, name, value) for value in spec)))
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec) and set(spec) <= {"low", "high", "log", "step"}:
            low, high = _check_value(at, name, spec["low"]), _check_value(at, name, spec["high"])
            if not low < high or (spec.get("log") and low <= 0):
                raise UsageError(f"{at}: needs low < high (and low > 0 with log = true)")
            search.append(Dimension(name, low, high=high, log=bool(spec.get("log", False)), step=spec.get("step")))
        else:
            raise UsageError(f"{at}: give a list of choices or a table {{low, high[, log][, step]}}")
    clash = sorted(set(fixed) & {d.name for d in search})
    if clash:
        raise UsageError(f"{where}: {clash[0]} is both fixed and searched")
    return Space(fixed, tuple(search))


def load_space(path: Path | None) -> Space:
    """The search space of a JSON or TOML file, or the default one."""
    if path is None:
        return parse_space(default_space(), "the default search space")
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"search space {path} does not exist")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            document = tomllib.loads(path.read_text())
        else:
            document = parse(path.read_text())
    except JsonRefused as error:
        raise InputFormatError(error.at(path)) from None
    except ValueError as error:  # tomllib.TOMLDecodeError
        raise InputFormatError(f"{path}: not valid TOML ({error})") from None
    return parse_space(document, str(path))


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise TronError("tron tune needs optuna, which is not installed", "Run: pip install 'tron-cli[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tron reports trials itself
    return optuna


def study_dir(study: str) -> Path:
    return home.home() / "tune" / study


class _Pruning:
    """The loop's epoch-end callback of one trial: report the metric, stop when pruned or out of time."""

    def __init__(self, trial: Any, metric: str, deadline: float | None):
        self.trial, self.metric, self.deadline = trial, metric, deadline
        self.pruned = False
        self.out_of_time = False

    def epoch_end(self, record: dict[str, Any]) -> bool:
        value = (record.get("valid") or {}).get(self.metric)
        if value is not None:
            self.trial.report(float(value), int(record["epoch"]))
            self.pruned = bool(self.trial.should_prune())
        self.out_of_time = self.deadline is not None and time.monotonic() > self.deadline
        return self.pruned or self.out_of_time

    def finish(self, summary: dict[str, Any]) -> None: ...


def _trial_config(space: Space, metric: str, trial: Any) -> TrainConfig:
    values = {**space.fixed, **{d.name: d.suggest(trial) for d in space.search}, "select_on": metric}
    return validate(TrainConfig.create(**values))


def tune(request: TuneRequest, report: Reporter = SILENT) -> dict[str, Any]:
    """Run (or resume, or join) the study; returns its summary (best trial, best config file, trials)."""
    optuna = _optuna()
    parse_metric(request.metric, "--metric")
    if request.trials < 1:
        raise UsageError("--trials must be at least 1")
    space = load_space(request.space)
    overrides = {name: _check_value("--set", name, value) for name, value in request.overrides}
    dataset = read_dataset(Path(request.data) if request.data else home.latest_dataset())
    if not dataset.has("valid"):
        raise UsageError(f"{dataset.path} has no validation split, and tron tune never selects on test", "Re-run tron preprocess without --no-valid")
    study_name = request.study or f"tune-{dataset.name}"
    out = study_dir(study_name)
    made = [folder for folder in (out, *out.parents) if not folder.exists()]
    out.mkdir(parents=True, exist_ok=True)
    storage_url = request.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    try:
        check_writable(storage_url, "the study database", "Give --storage a database tron can write, or another --study")
    except TronError:
        for folder in made:  # nothing is left of a study that could not start
            shutil.rmtree(folder, ignore_errors=True)
        raise
    storage = optuna.storages.RDBStorage(storage_url)
    try:
        earlier = len(optuna.load_study(study_name=study_name, storage=storage).trials)
    except KeyError:
        earlier = 0
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        # seeded, and differently for each process that joins or resumes the study (it starts at another count)
        sampler=optuna.samplers.TPESampler(seed=request.seed + earlier),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )
    attributes = {"dataset": str(dataset.path.resolve()), "metric": request.metric}
    for key, value in attributes.items():
        previous = study.user_attrs.get(key)
        if previous is not None and previous != value:
            raise UsageError(f"study {study_name} was started with {key} {previous}, not {value}", "Use the same, or another --study")
        study.set_user_attr(key, value)
    finished = lambda: sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))
    report.info(f"study {study_name} ({storage_url}): {finished()} of {request.trials} trials finished")
    deadline = time.monotonic() + request.timeout if request.timeout else None
    space = Space({**space.fixed, **overrides}, tuple(d for d in space.search if d.name not in overrides))

    def trial_value(trial: Any) -> float:
        try:
            config = _trial_config(space, request.metric, trial)
        except UsageError as error:  # a combination tron train refuses: this trial fails, the study goes on
            trial.set_user_attr("error", error.line())
            report.warn(f"trial {trial.number}: {error.line()}")
            raise
        run_dir = home.runs_root() / f"{study_name}-trial-{trial.number}"
        trial.set_user_attr("run", str(run_dir.resolve()))
        pruning = _Pruning(trial, request.metric, deadline)
        report.info(f"trial {trial.number}: {_describe(trial.params)}")
        with run_lock(run_dir):
            trainer = Trainer(config, dataset, run_dir, report)
            summary = execute(trainer, run_document(run_dir, trainer, dataset, config), (pruning,))
        trial.set_user_attr("best_epoch", summary["best_epoch"])
        trial.set_user_attr("epochs", summary["epochs"])
        trial.set_user_attr("train_seconds", summary["train_seconds"])
        value = float((summary.get("valid") or {}).get(request.metric, math.nan))
        if pruning.pruned:
            trial.set_user_attr("stopped", "pruned")
            report.info(f"trial {trial.number}: pruned after epoch {summary['epochs']}")
            raise optuna.TrialPruned()
        if pruning.out_of_time:  # its best epoch so far is a measured value of these options: kept, and marked
            trial.set_user_attr("stopped", "timeout")
        stopped = f", stopped by --timeout after epoch {summary['epochs']}" if pruning.out_of_time else ""
        report.info(f"trial {trial.number}: valid {request.metric} {value:.4f} (epoch {summary['best_epoch']}{stopped})")
        return value

    def enough(study: Any, trial: Any) -> None:
        if finished() >= request.trials:
            study.stop()

    if finished() < request.trials:
        study.optimize(
            trial_value,
            n_trials=request.trials - finished(),
            timeout=request.timeout,
            catch=(UsageError,),  # an invalid combination fails that trial only
            callbacks=[enough],
        )
    return _summarise(study, study_name, storage_url=storage_url, out=out, dataset=dataset, metric=request.metric, space=space)


def _describe(params: dict[str, Any]) -> str:
    return " ".join(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}" for name, value in params.items())


def _summarise(study: Any, name: str, storage_url: str, out: Path, dataset: Dataset, metric: str, space: Space) -> dict[str, Any]:
    """The study's trials, and its best trial's options written as tune/STUDY/best.json."""
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "best_epoch": t.user_attrs.get("best_epoch"),
            "epochs": t.user_attrs.get("epochs"),
            "train_seconds": t.user_attrs.get("train_seconds"),
            "run": t.user_attrs.get("run"),
            "error": t.user_attrs.get("error"),
            "stopped": t.user_attrs.get("stopped"),
        }
        for t in study.get_trials(deepcopy=False)
    ]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    summary: dict[str, Any] = {"study": name, "storage": storage_url, "metric": f"valid {metric}", "dataset": str(dataset.path), "trials": trials}
    if complete:
        best = max(complete, key=lambda t: t.value)
        # the dataset by name when it lives under $TRON_HOME/data (as a reference config names it), else by path
        under_home = dataset.path.resolve() == (home.datasets_root() / dataset.name).resolve()
        config = {"dataset": dataset.name if under_home else str(dataset.path.resolve()), **space.fixed, **best.params, "select_on": metric}
        write_json(out / "best.json", config)
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params, "run": best.user_attrs.get("run")}
        summary["config"] = str(out / "best.json")
    summary["train_hours"] = sum(t["train_seconds"] or 0 for t in trials) / 3600  # training wall time of every trial, validation included
    write_json(out / "study.json", summary, kind="study")
    return summary
