"""`tron tune`: an Optuna study of training options on the validation split, resumable and shareable."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from tron_cli.cli._params import Finite, Whole
from tron_cli.cli._ui import UI, pass_ui


def _setting(value: str) -> tuple[str, object]:
    """NAME=VALUE with VALUE read as JSON when it parses (numbers, true/false), else as a string."""
    from tron_cli.safe_json import JsonRefused, parse

    name, equals, raw = value.partition("=")
    if not equals or not name.strip():
        raise click.BadParameter(f"{value!r} is not NAME=VALUE")
    try:
        parsed = parse(raw)
    except JsonRefused:
        parsed = raw
    return name.strip().replace("-", "_"), parsed


@click.command(short_help="Search training options with Optuna on the validation split.")
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--space", type=click.Path(dir_okay=False, path_type=Path), help="Search space, JSON or TOML (docs/tuning.md) [default: TRON's].")
@click.option("--trials", type=Whole(min=1), default=20, show_default=True, help="Finished trials the study should have in all (resuming counts earlier ones).")
@click.option("--timeout", type=Finite(min=1), help="Seconds for this process: no trial starts after them, and a running one stops at its next epoch end.")
@click.option("--metric", default="recall@20", show_default=True, help="Validation metric to maximise and prune on: recall@K, mrr@K or ndcg@K.")
@click.option("--study", "study_name", help="Study name [default: tune-DATASET].")
@click.option("--storage", help="Optuna database URL shared by several processes [default: sqlite:///$TRON_HOME/tune/STUDY/study.db].")
@click.option("--set", "settings", metavar="NAME=VALUE", multiple=True, help="Fix a training option for every trial (repeatable; wins over the space file).")
@click.option("--seed", type=Whole(), default=0, show_default=True, help="Seed of the TPE sampler.")
@click.option("--json", "as_json", is_flag=True, help="Print the study's summary as one JSON object on stdout.")
@pass_ui
def tune(ui: UI, data, space, trials, timeout, metric, study_name, storage, settings, seed, as_json) -> None:
    """Search training options with Optuna (TPE, median pruning) on DATA's validation split.

    Reads DATA (a dataset with a validation split; default: the newest) and a search space. Every
    trial is a normal run dir, runs/STUDY-trial-N, pruned after an epoch when its validation metric
    is below the median of earlier trials at that epoch. The study is kept in a database, so running
    the same command again resumes it, and processes on several machines given one --storage URL
    share it. Writes tune/STUDY/best.json (a config for tron train --config), tune/STUDY/study.json,
    a table of the trials on stderr, and with matplotlib the study's plots (tron plot --study).

    \b
    Examples:
        tron tune data/synthetic --trials 4 --timeout 300
        tron tune data/yc64 --space configs/tune-yoochoose.toml --set device=cpu --metric mrr@20
        tron tune data/otto --storage postgresql://db/tron --study otto-xl   # on every machine
        tron train --config tune/tune-synthetic/best.json
    """
    from tron_cli.stages.tune import TuneRequest
    from tron_cli.stages.tune import tune as run

    request = TuneRequest(
        data, space, trials=trials, timeout=timeout, metric=metric, study=study_name, storage=storage, overrides=tuple(_setting(s) for s in settings), seed=seed
    )
    summary = run(request, report=ui)
    rows = []
    for trial in summary["trials"]:
        value = "-" if trial["value"] is None else f"{trial['value']:.4f}"
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial["params"].items())
        epochs = "-" if trial["epochs"] is None else f"{trial['best_epoch']}/{trial['epochs']}"
        state = trial["state"].lower() + (" (timeout)" if trial["stopped"] == "timeout" else "")
        rows.append([trial["number"], state, value, epochs, params + (f" ({trial['error']})" if trial["error"] else "")])
    ui.table(f"study {summary['study']}: {summary['metric']}", ["trial", "state", "value", "best/epochs", "options"], rows)
    if "best" in summary:
        ui.info(
            f"best: trial {summary['best']['number']} ({summary['best']['value']:.4f}); config {summary['config']} (tron train --config {summary['config']})"
        )
    if importlib.util.find_spec("matplotlib") is not None and "best" in summary:
        from tron_cli.charts import plot_study
        from tron_cli.errors import TronError

        try:
            written = plot_study(summary["storage"], summary["study"], Path(summary["config"]).parent)
            summary["plots"] = [str(path) for path in written]
            ui.info(f"Wrote {', '.join(str(path) for path in written)}.")
        except TronError as error:
            ui.warn(error.line())
    if as_json:
        ui.emit_json(summary)
