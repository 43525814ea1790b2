"""Training curves of one or more runs, drawn from their history.jsonl into one PNG (no click or rich here).

Three panels share the epoch axis: training loss, validation Recall@20 and validation MRR@20; each run has
one colour in all three, and the legend names the run directory with its loss and model from config.json.
A MultiTRON run's front (`tron pareto`'s pareto.json) is drawn twice, one point per order weight coloured by
it (cmap "cool", as the reference's plots) and joined in weight order: click Recall@20 against order recall@20
(the axes of the hypervolume), and against order density@20 (the share of ordered items among the hits),
which is what the order loss raises: it scores a clicked item by whether it is ordered later, so moving the
weight to orders trades hits for hits that end in an order.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tron_cli.artifacts.documents import read_json, read_jsonl
from tron_cli.artifacts.files import atomic_path
from tron_cli.errors import ArtifactError, TronError
from tron_cli.safe_json import parse

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRICS = (("recall@20", "Validation Recall@20"), ("mrr@20", "Validation MRR@20"))
RUN_FIRST = "Run first: tron train"


def load_history(run_dir: Path) -> list[dict[str, Any]]:
    """The epochs of a run in order, one record each; a missing, empty or malformed history is an ArtifactError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"run directory {run_dir} does not exist", f"{RUN_FIRST}, or check the path")
    path = run_dir / "history.jsonl"
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: the run has not finished an epoch", RUN_FIRST)
    records = read_jsonl(path)
    data = path.read_bytes()
    complete = len([line for line in data.splitlines() if line.strip()]) - (0 if data.endswith(b"\n") else 1)
    if len(records) < complete:  # a kill tears only the last line, which has no newline yet: anything else is damage
        raise ArtifactError(f"{path}:{len(records) + 1} is not a JSON record (the history is damaged)", "Re-run: tron train")
    if not records:
        raise ArtifactError(f"{path} is empty: the run has not finished an epoch", RUN_FIRST)
    by_epoch: dict[int, dict[str, Any]] = {}
    for line, record in enumerate(records, start=1):
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise ArtifactError(f"{path}:{line} is not an epoch record (no integer epoch)", RUN_FIRST)
        by_epoch[record["epoch"]] = record  # a resumed run logs an epoch again: the later record wins
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def run_label(run_dir: Path) -> str:
    """The run directory's name, with the loss and model from its config.json when that is readable."""
    run_dir = Path(run_dir)
    try:  # read as plain JSON, not checked as a run's config: the label is cosmetic, and only "train" is used
        document = parse((run_dir / "config.json").read_bytes())
    except (OSError, ValueError):
        return run_dir.name  # an unreadable config must not stop the plot
    train = document.get("train") if isinstance(document, dict) else None
    if not isinstance(train, dict):
        return run_dir.name
    details = [f"{key} {train[key]}" for key in ("loss", "model") if train.get(key) is not None]
    return f"{run_dir.name} ({', '.join(details)})" if details else run_dir.name


def _number(value: Any) -> float:
    """A plottable float; missing or non-numeric values become NaN, which matplotlib leaves as a gap."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def build_figure(run_dirs: list[Path]) -> Figure:
    """The three-panel figure of `run_dirs`, overlaid, attached to an Agg canvas (pyplot's global state is never touched)."""
    try:
        import matplotlib  # noqa: F401  (imported first so a missing install is reported before anything else)
    except ImportError:
        raise TronError("tron plot needs matplotlib, which is not installed", "Run: pip install 'tron-cli[plot]'") from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    runs = [(Path(run_dir), load_history(run_dir)) for run_dir in run_dirs]
    figure = Figure(figsize=(15, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, *metric_axes = figure.subplots(1, 3, sharex=True)  # shared epochs: a panel without points keeps integer ticks
    loss_axes.set_title("Training loss")
    loss_axes.set_ylabel("loss")
    for axes, (_, title) in zip(metric_axes, METRICS):
        axes.set_title(title)

    missing = []  # runs without a single validated epoch, named in the metric panels
    for index, (run_dir, records) in enumerate(runs):
        style = {"color": f"C{index % 10}", "marker": "o", "markersize": 3, "linewidth": 1.5}
        epochs = [record["epoch"] for record in records]
        loss_axes.plot(epochs, [_number(record.get("loss")) for record in records], label=run_label(run_dir), **style)
        validated = [record for record in records if isinstance(record.get("valid"), dict)]
        if not validated:
            missing.append(run_dir.name)
        for axes, (key, _) in zip(metric_axes, METRICS):
            axes.plot([r["epoch"] for r in validated], [_number(r["valid"].get(key)) for r in validated], **style)

    for axes, (key, _) in zip(metric_axes, METRICS):
        if len(missing) == len(runs):
            note = "No validation in this run" if len(runs) == 1 else "No validation in these runs"
            axes.text(0.5, 0.5, note, transform=axes.transAxes, ha="center", va="center", color="0.4")
            axes.set_yticks([])  # an empty panel's default scale would read like measured values
        elif missing:
            axes.text(0.98, 0.02, "no validation: " + ", ".join(missing), transform=axes.transAxes, ha="right", va="bottom", fontsize=8, color="0.4")
        axes.set_ylabel(key)

    for axes in (loss_axes, *metric_axes):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
    figure.legend(*loss_axes.get_legend_handles_labels(), loc="outside lower center", ncols=min(len(runs), 3), frameon=False)
    return figure


def _matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise TronError("tron plot needs matplotlib, which is not installed", "Run: pip install 'tron-cli[plot]'") from None


def build_front_figure(run_dir: Path) -> Figure:
    """The front in RUN/pareto.json: click Recall@20 (x) against order recall@20 (left) and order density@20
    (right, when the points have it), coloured by the order weight."""
    _matplotlib()
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    front = read_json(Path(run_dir) / "pareto.json", "pareto")
    points = sorted(front["points"], key=lambda point: point["order_weight"])
    x_key, y_key = front["axes"]
    density_key = y_key.replace("order_recall", "order_density")
    y_keys = [y_key] + ([density_key] if density_key != y_key and all(density_key in p for p in points) else [])
    xs, weights = [_number(p[x_key]) for p in points], [p["order_weight"] for p in points]
    figure = Figure(figsize=(6.4 * len(y_keys) - 1.0 * (len(y_keys) - 1), 5.0), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, len(y_keys), squeeze=False)[0]
    norm, cmap = Normalize(0.0, 1.0), colormaps["cool"]
    for axes, key in zip(panels, y_keys, strict=True):
        ys = [_number(p[key]) for p in points]
        axes.plot(xs, ys, color="0.7", linewidth=1, zorder=1)
        axes.scatter(xs, ys, c=weights, cmap=cmap, norm=norm, s=36, zorder=2, edgecolors="0.3", linewidths=0.4)
        axes.set_xlabel(f"click {x_key.replace('recall', 'Recall')}")
        axes.set_ylabel(key)
        axes.grid(True, alpha=0.3)
    bar = figure.colorbar(ScalarMappable(norm, cmap), ax=list(panels), ticks=[0.0, 0.5, 1.0])
    bar.set_label("order weight (preference [1 - w, w])")
    figure.suptitle(f"{Path(run_dir).name}: front on {front['split']}, hypervolume {front['hypervolume']:.4f} ({x_key}, {y_key})", fontsize=10)
    return figure


def plot_front(run_dir: Path, out: Path) -> Path:
    """Draw the front of `run_dir` (its pareto.json) into the PNG `out` (written atomically) and return `out`."""
    figure = build_front_figure(run_dir)
    out = Path(out)
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png")
    return out


def legend_labels(figure: Figure) -> list[str]:
    """The run labels in the figure's legend, in plotting order."""
    return [text.get_text() for legend in figure.legends for text in legend.get_texts()]


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    """Draw the training curves of `run_dirs` into the PNG `out` (written atomically) and return `out`."""
    figure = build_figure(run_dirs)
    out = Path(out)
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png")  # the temporary name ends in .tmp, so the format is given, not guessed
    return out


STUDY_PLOTS = (("optimization_history.png", "plot_optimization_history"), ("param_importances.png", "plot_param_importances"))


def plot_study(storage: str, study_name: str, out_dir: Path) -> list[Path]:
    """A `tron tune` study's optimisation history and parameter importances (Optuna's matplotlib plots) as
    PNGs in `out_dir`; importances need two finished trials, and are left out before that."""
    try:
        import matplotlib  # noqa: F401
        import optuna
    except ImportError:
        raise TronError("plotting a study needs optuna and matplotlib", "Run: pip install 'tron-cli[tune,plot]'") from None
    import optuna.visualization.matplotlib as views

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise ArtifactError(f"no study {study_name!r} in {storage}", "Run first: tron tune") from None
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    written = []
    for name, view in STUDY_PLOTS:
        if view == "plot_param_importances" and (len(complete) < 2 or not complete[0].params):
            continue
        with warnings.catch_warnings():  # Optuna marks its matplotlib views experimental; they are what we want
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes = getattr(views, view)(study)
        figure = axes.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        out = Path(out_dir) / name
        with atomic_path(out) as tmp:
            figure.savefig(tmp, format="png")
        import matplotlib.pyplot as pyplot  # optuna draws through pyplot: close its figure so none accumulate

        pyplot.close(figure)
        written.append(out)
    return written
