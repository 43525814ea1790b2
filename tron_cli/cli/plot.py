"""`tron plot [RUN]...`: the click face of `tron_cli.charts`."""

from __future__ import annotations

from pathlib import Path

import click

from tron_cli.cli._ui import UI, pass_ui
from tron_cli.errors import UsageError
from tron_cli.workspace.home import resolve_run


@click.command(short_help="Plot loss, Recall@20 and MRR@20 per epoch of one or more runs.")
@click.argument("runs", nargs=-1, metavar="[RUN]...", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.png",
    help="The PNG to write [default: RUN/training.png for one run; required for several].",
)
@click.option(
    "--study",
    type=click.Path(file_okay=False, path_type=Path),
    help="Plot a tron tune study instead: its directory (tune/STUDY) -> optimization_history.png, param_importances.png there.",
)
@click.option("--pareto", "front_only", is_flag=True, help="Draw only the run's click/order front (its pareto.json from tron pareto) -> RUN/pareto.png.")
@click.option("--json", "as_json", is_flag=True, help='Print {"output": PATH, "runs": [PATH, ...]} on stdout (and "front": PATH when drawn).')
@pass_ui
def plot(ui: UI, runs: tuple[Path, ...], output: Path | None, study: Path | None, front_only: bool, as_json: bool) -> None:
    """Plot the training curves of one or more runs into one PNG.

    Reads history.jsonl and config.json of each RUN: a run directory, or the name of one under
    $TRON_HOME/runs/ (default: the newest finished run). A run still training can be plotted too.
    Writes a PNG with three panels, training loss, validation Recall@20 and validation MRR@20 per
    epoch, one colour per run: RUN/training.png for a single run, or -o FILE.png, which several runs
    need. Epochs without validation are left out of the metric panels. A run with a pareto.json
    (tron pareto) also gets RUN/pareto.png: click Recall@20 against order recall@20, one point per
    order weight, coloured by it; --pareto draws only that (to -o FILE.png if given).

    \b
    Examples:
      tron plot                                   # the newest run: runs/NAME/training.png
      tron plot runs/tron-1 runs/sasrec-1 -o compare.png
      tron plot --study tune/tune-yc64            # the study's optimisation history and importances
      tron plot runs/otto-sasrec-1 --pareto       # the front of a MultiTRON run: runs/NAME/pareto.png
    """
    from tron_cli.charts import plot_front, plot_runs  # matplotlib and the artifact readers load only when a plot is drawn

    if study is not None:
        _plot_study(ui, study, runs, as_json)
        return

    run_dirs = [resolve_run(run) for run in runs] or [resolve_run(None)]
    if front_only:
        if len(run_dirs) > 1:
            raise UsageError("--pareto draws the front of one run")
        front = plot_front(run_dirs[0], output or run_dirs[0] / "pareto.png")
        ui.info(f"Wrote {front}.")
        if as_json:
            ui.emit_json({"output": str(front.resolve()), "runs": [str(run_dirs[0].resolve())], "front": str(front.resolve())})
        return
    if output is None:
        if len(run_dirs) > 1:
            raise UsageError(f"plotting {len(run_dirs)} runs needs -o/--output FILE.png", "For example: tron plot RUN1 RUN2 -o compare.png")
        output = run_dirs[0] / "training.png"
    if output.suffix.lower() != ".png":
        raise UsageError(f"-o/--output must name a .png file, not {output}")
    written = plot_runs(run_dirs, output)
    ui.info(f"Wrote {written} ({len(run_dirs)} run{'s' if len(run_dirs) > 1 else ''}).")
    extra = {}
    if len(run_dirs) == 1 and (run_dirs[0] / "pareto.json").is_file():
        front = plot_front(run_dirs[0], run_dirs[0] / "pareto.png")
        ui.info(f"Wrote {front} (the click/order front).")
        extra["front"] = str(front.resolve())
    if as_json:
        ui.emit_json({"output": str(written.resolve()), "runs": [str(run_dir.resolve()) for run_dir in run_dirs], **extra})


def _plot_study(ui: UI, study: Path, runs: tuple[Path, ...], as_json: bool) -> None:
    """The plots of the study recorded in STUDY/study.json (its storage URL and name), written beside it."""
    from tron_cli.artifacts.documents import read_json
    from tron_cli.charts import plot_study

    if runs:
        raise UsageError("give either RUN... or --study, not both")
    record = read_json(study / "study.json", "study")
    written = plot_study(record["storage"], record["study"], study)
    ui.info(f"Wrote {', '.join(str(path) for path in written)}.")
    if as_json:
        ui.emit_json({"outputs": [str(path.resolve()) for path in written], "study": record["study"]})
