"""`tron train`: a dataset in, a run dir (config.json, model.safetensors, history.jsonl, checkpoint/) out.

The options are built when the command is used, from the training options of `TrainConfig`, the settings of
every registered model and the options of every registered loss, so that a model or loss added later (a
plugin) brings its own flags, choices and help.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from tron_cli.cli._params import Finite, RegistryChoice, Whole
from tron_cli.cli._ui import UI, shown


class _CountOrAuto(click.ParamType):
    name = "INTEGER|auto"

    def convert(self, value, param, ctx):
        if value is None or value == "auto":
            return "auto"
        return Whole().convert(value, param, ctx)


class _Concentration(click.ParamType):
    """--beta A or A,B: a Dirichlet concentration, as a tuple of one or two numbers."""

    name = "A[,B]"

    def convert(self, value, param, ctx):
        if isinstance(value, (tuple, list)):
            return tuple(value)
        try:
            numbers = tuple(float(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not one number or two separated by a comma", param, ctx)
        if not 1 <= len(numbers) <= 2:
            self.fail(f"{value!r} is not one number or two separated by a comma", param, ctx)
        return tuple(Finite().convert(number, param, ctx) for number in numbers)


class _Numbers(click.ParamType):
    """--transition-grid 0,0.5,1: a list of finite numbers, comma-separated."""

    name = "X[,Y...]"

    def convert(self, value, param, ctx):
        if isinstance(value, (tuple, list)):
            return tuple(Finite().convert(number, param, ctx) for number in value)
        parts = [part for part in str(value).split(",") if part.strip()]
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            self.fail(f"{value!r} is not a list of numbers separated by commas", param, ctx)
        return tuple(Finite().convert(number, param, ctx) for number in numbers)


def _load_config(ctx: click.Context, param, value):
    """--config FILE: read when parsed, so that a bad file is a usage error naming it, and its values checked by the
    flags' types as their defaults; `tron_cli.train` merges the file beneath the flags and TRON_* variables."""
    if value is None:
        return None
    from tron_cli.errors import UsageError
    from tron_cli.training.config import load_config_file

    try:
        options, _ = load_config_file(Path(value))
    except UsageError as error:
        raise click.BadParameter(error.line(), ctx, param) from None
    if "batch_negatives" in options and options["batch_negatives"] is None:
        options["batch_negatives"] = "auto"  # the reference's null; a None default would mean "not given"
    ctx.meta["tron.config_options"] = options
    _set_defaults(ctx)
    ctx.meta["tron.config_file"] = str(value)
    return value


def _load_preset(ctx: click.Context, param, value):
    """--preset NAME: its settings become defaults beneath --config's (as `tron_cli.train` merges them)."""
    if value is not None:
        from tron_cli.training.config import PRESETS

        ctx.meta["tron.preset"] = value
        ctx.meta["tron.preset_options"] = dict(PRESETS[value].options)
        _set_defaults(ctx)
    return value


def _set_defaults(ctx: click.Context) -> None:
    """Defaults from the preset, then the config file over them, whatever order the two flags came in."""
    ctx.default_map = {**ctx.meta.get("tron.preset_options", {}), **ctx.meta.get("tron.config_options", {})}


def preset_option() -> click.Option:
    """--preset, its choices and help from `config.PRESETS`."""
    from tron_cli.training.config import PRESET_MODEL, PRESETS

    listing = "; ".join(f"{name}: {preset.summary}" for name, preset in PRESETS.items())
    return click.Option(
        ["--preset"],
        type=click.Choice(list(PRESETS)),
        is_eager=True,
        expose_value=False,
        callback=_load_preset,
        help=f"Named TRON settings (--model {PRESET_MODEL}), beneath --config and flags. {listing}.",
    )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option(name: str, example: Any, help: str, choices: Any = None) -> click.Option:
    """An option whose value is None unless given (flag, environment, --config), so that the model's defaults
    can fill the rest; its type follows `example` (a default value), and `help` says what the default is."""
    flag = _flag(name)
    if name == "beta":
        return click.Option([flag, name], type=_Concentration(), default=None, help=help)
    if isinstance(example, bool):
        return click.Option([f"{flag}/--no-{name.replace('_', '-')}", name], default=None, help=help)
    if isinstance(example, tuple) and choices is None:  # a list of numbers (a grid of weights): comma-separated
        return click.Option([flag, name], type=_Numbers(), default=None, help=help)
    if isinstance(example, tuple):  # a list of names (--track): repeatable, and one environment variable for every command
        return click.Option([flag, name], type=choices, multiple=True, default=None, envvar=f"TRON_{name.upper()}", help=help)
    if choices is not None:
        return click.Option([flag, name], type=choices, default=None, help=help)
    if name == "batch_negatives":
        return click.Option([flag, name], type=_CountOrAuto(), default=None, help=help)
    if isinstance(example, float):
        return click.Option([flag, name], type=Finite(), default=None, help=help)
    if isinstance(example, int) or example is None:
        return click.Option([flag, name], type=Whole(), default=None, help=help)
    return click.Option([flag, name], type=type(example), default=None, help=help)


def _choice(choices: tuple[str, ...] | str | None) -> click.ParamType | None:
    """A declaration's choices as a click type: a fixed tuple, or "module:REGISTRY" read when used."""
    if choices is None:
        return None
    return RegistryChoice(choices) if isinstance(choices, str) else click.Choice(choices)


def registry_options() -> list[click.Option]:
    """Training options, from their declarations; every model's settings after --model, every loss's options after --loss."""
    from tron_cli.losses import all_options
    from tron_cli.models import MODELS, all_settings
    from tron_cli.training.config import TRAIN_OPTIONS

    out = [preset_option()]
    for name, declaration in TRAIN_OPTIONS.items():
        default = declaration.default
        shown = "auto" if default is None and name == "batch_negatives" else ("none" if default == () else default)
        shown = ",".join(f"{a:g}" for a in default) if name == "beta" else shown
        shown = declaration.shown_default or shown
        out.append(_option(name, default, declaration.help + ("" if shown is None else f" [default: {shown}]"), _choice(declaration.choices)))
        if name == "model":
            for setting, (setting_default, help, setting_choices, models) in all_settings().items():
                defaults = "; ".join(f"{model}: {MODELS.get(model).settings()[setting]}" for model in models)
                which = "" if len(models) == len(MODELS.names()) else f" (model {', '.join(models)} only)"
                out.append(_option(setting, setting_default, f"{help}{which} [default {defaults}]", _choice(setting_choices)))
        if name == "loss":
            for option_name, (option, losses) in all_options().items():
                out.append(_option(option_name, option.default, f"{option.help} (--loss {', '.join(losses)}) [default: {option.default}]"))
    return out


class TrainCommand(click.Command):
    """`tron train`, whose options derive from the registries each time the command is used."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if "tron.train_params" not in ctx.meta:  # one set of Option objects per invocation: click compares them
            ctx.meta["tron.train_params"] = [*super().get_params(ctx)[:-1], *registry_options(), super().get_params(ctx)[-1]]
        return ctx.meta["tron.train_params"]


@click.command(cls=TrainCommand, short_help="Train TRON (or SASRec, GRU4Rec+ and other losses) on a dataset.")
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--data", "data_option", type=click.Path(path_type=Path), help="The dataset dir, as DATA (as tron evaluate --data).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="A reference TRON config (JSON) or a run's config.json; flags override it.",
)
@click.option("--out", type=click.Path(path_type=Path), help="Run dir (default: $TRON_HOME/runs/DATASET-MODEL-N).")
@click.option("--resume", type=click.Path(path_type=Path), help="Continue the run in this dir from its checkpoint.")
@click.option(
    "--init-from",
    type=click.Path(path_type=Path),
    help="Warm start: every weight and the known items' rows from this run or bundle (a path, or a name: the bundle of that name first, then the run); DATA's catalogue must have grown from its (tron preprocess --catalogue-from).",
)
@click.option("--force", is_flag=True, help="Replace an existing run dir.")
@click.option("--devices", type=Whole(min=1), default=1, show_default=True, help="Processes for data-parallel training (DDP) on this machine.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout.")
@click.pass_context
def train(ctx: click.Context, data, data_option, out, resume, init_from, force, devices, as_json, **values) -> None:
    """Train TRON (SASRec with shared negatives, top-k and sampled softmax) or a baseline on a dataset.

    Reads DATA or --data (a dataset dir; default: the one named by --config's "dataset", else the
    newest under $TRON_HOME/data/). Writes a run dir: config.json (the resolved configuration),
    model.safetensors (the best epoch by validation Recall@20; on leave-one-out data NDCG@10 without seen
    items, as the dataset records), history.jsonl (one line per epoch),
    checkpoint/ (to --resume), summary.json (when finished). Defaults are TRON XL's, sized for a GPU
    (--preset small fits a CPU); each model starts from its own (gru4rec: the reference's GRU4Rec+).

    \b
    Examples:
        tron train                                   # TRON XL on the newest dataset
        tron train --preset small --epochs 3         # a CPU-sized TRON
        tron train data/yoochoose --loss ssm --topk 100 --epochs 5
        tron train --config configs/tron/otto.json --epochs 1
        tron train --model gru4rec                   # GRU4Rec+ with the reference's settings
        tron train --resume runs/otto-sasrec-1 --epochs 12
        tron train data/today --init-from runs/yesterday --config runs/yesterday/config.json --epochs 1
    """
    from tron_cli.api.training import train as run
    from tron_cli.errors import OptionError

    ui: UI = ctx.find_object(UI) or UI()
    if data is not None and data_option is not None and data != data_option:
        raise click.UsageError(f"give the dataset once: DATA ({data}) or --data ({data_option})")
    # what was typed or set by TRON_TRAIN_*: the preset's and the config file's values are the API's to merge beneath
    explicit = {name: value for name, value in values.items() if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    try:
        trained = run(
            data or data_option,
            preset=ctx.meta.get("tron.preset"),
            config=ctx.meta.get("tron.config_file"),
            out=out,
            resume=resume,
            force=force,
            devices=devices,
            init_from=init_from,
            reporter=ui,
            **explicit,
        )
    except OptionError as error:
        raise click.UsageError(error.line()) from None
    summary = dict(trained.summary or {})
    summary["run"] = str(trained.path)
    _show(ui, summary)
    if as_json:
        ui.emit_json(summary)


def _metric_name(name: str) -> str:
    """A metric as the tables write it: ndcg@10 -> NDCG@10."""
    metric, _, cutoff = name.partition("@")
    return f"{metric.upper() if metric in ('ndcg', 'mrr') else metric.capitalize()}@{cutoff}"


def _show(ui: UI, summary: dict) -> None:
    valid = summary.get("valid") or {}
    chosen = summary["selected_by"].removeprefix("valid ")  # the metric that picked the epoch, shown beside the usual two
    rows = [
        ["run", shown(summary["run"])],
        ["epochs", summary["epochs"]],
        ["best epoch", f"{summary['best_epoch']} ({summary['selected_by']})"],
        *([["valid hypervolume", valid["hypervolume"]]] if "hypervolume" in valid else []),
        ["valid Recall@20", valid.get("recall@20", valid.get("order_weight_0/recall@20", "-"))],
        ["valid MRR@20", valid.get("mrr@20", valid.get("order_weight_0/mrr@20", "-"))],
        *([[f"valid {_metric_name(chosen)}", valid[chosen]]] if "@" in chosen and chosen in valid and chosen not in ("recall@20", "mrr@20") else []),
        *_blend_rows(summary.get("blends")),
        ["final train loss", summary["loss"]],
        ["sessions/s", summary["sessions_per_s"]],
        ["events/s", summary["events_per_s"]],
        ["training time (s)", summary["train_seconds"]],
        ["device", summary["device"]],
    ]
    ui.table("training summary", ["", "value"], rows)


def _blend_rows(blends: dict | None) -> list[list]:
    """The blends chosen on validation when training ended, and what they scored there."""
    if not blends:
        return []
    chosen = blends["chosen"]
    knn = f"{chosen['knn_similarity']} {chosen['knn_weight']:g}" if chosen["knn_weight"] else "0"
    grid = blends["grid"]
    return [
        [
            "blends (chosen on valid)",
            f"transitions {chosen['transition_weight']:g}, knn {knn}, repeat {chosen['repeat_weight']:g}"
            f" of {len(blends['points'])} combinations by {blends['select_on']} ({blends['seconds']:.0f} s)",
        ],
        ["grids", "; ".join(f"{name} {','.join(str(v) for v in values)}" for name, values in grid.items() if values)],
        ["valid Recall@20 with blends", blends["valid"]["recall@20"]],
        ["valid MRR@20 with blends", blends["valid"]["mrr@20"]],
    ]
