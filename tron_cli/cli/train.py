"""`tron train`: a dataset in, a run dir (config.json, model.safetensors, history.jsonl, checkpoint/) out.

The options are built when the command is used, from the training options of `TrainConfig`, the settings of
every registered model and the options of every registered loss, so that a model or loss added later (a
plugin) brings its own flags, choices and help.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from tron_cli.cli._params import RegistryChoice
from tron_cli.cli._ui import UI, shown

HELP = {
    "model": "The model to train; each starts from its own defaults (gru4rec: the reference's GRU4Rec+).",
    "uniform_negatives": "Uniform (or popularity) negatives drawn per batch/session/event.",
    "batch_negatives": "In-batch negatives per session, from other sessions' clicks (auto: batch size - 1, TRON XL's 127 at batch 128).",
    "sampling_style": "How uniform negatives are shared: per event, per session or per batch.",
    "negative_distribution": "Draw negatives uniformly or by popularity (count ** alpha).",
    "alpha": "Popularity exponent for --negative-distribution popularity.",
    "reject_uniform_session_items": "Never draw a click of the session (of the batch, batchwise) as a uniform negative.",
    "reject_in_batch_items": "Never take a session's own clicks as its in-batch negatives.",
    "topk": "Keep only the k highest-scoring negatives per event (0 keeps all).",
    "mask_hits": "Mask negatives equal to the target (--no-mask-hits: the reference's behaviour).",
    "loss": "The training objective.",
    "logq": "LogQ correction weight for sampled softmax losses (0 off, 1 full).",
    "objective": "click: the next click; multitron: clicks and orders, one model for every trade-off, read as a preference vector (MultiTRON).",
    "beta": "MultiTRON: the Dirichlet concentration of each step's preference vector: A (for A,A) or A,B.",
    "epochs": "Training epochs.",
    "batch_size": "Sessions per step (per device unless --batch-size-per-device).",
    "batch_size_per_device": "Sessions per step on each device with --devices (default: --batch-size / N).",
    "lr": "Learning rate (the peak, under --lr-schedule).",
    "lr_schedule": "Learning rate over the run: constant, or cosine / linear decay to zero over all --epochs.",
    "warmup_steps": "Raise the learning rate linearly from 0 over this many first steps.",
    "optimizer": "adam, adagrad, or a row-sparse variant that updates only the item rows a step touched.",
    "shuffle": "Session order per epoch (reference names; 'shuffling_*' spellings accepted).",
    "bucket_window": "Put sessions of similar length in the same batch, within windows of N batches (less padding; 0: off).",
    "seed": "Seed of every random draw (initialisation, dropout, order, negatives).",
    "early_stopping": "Stop after N epochs without a better validation --select-on metric (0: never).",
    "select_on": "Validation metric that selects the best epoch: recall@K, mrr@K or ndcg@K.",
    "exclude_seen": "Validate without the session's own clicks in the ranking (as tron evaluate --exclude-seen; leave-one-out data).",
    "valid_limit": "Validation sessions per epoch: a fraction (<= 1) or a number.",
    "transition_weight": "Add W * log(1 + P(item | last click) / --transition-smoothing) to every score outside training, P counted on the train split (a Markov prior; 0: off).",
    "transition_smoothing": "Additive smoothing alpha of the transition prior's probabilities.",
    "overfit_batches": "Train on only this many batches (or this fraction) per epoch, for debugging.",
    "device": "auto (CUDA when present), cpu or cuda.",
    "precision": "auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16 or fp16.",
    "compile": "torch.compile the model and the loss (batch widths and event counts rounded up to a few static shapes).",
    "track": "Record the run with an experiment tracker (repeatable; also TRON_TRACK): mlflow, tensorboard.",
}


class _CountOrAuto(click.ParamType):
    name = "INTEGER|auto"

    def convert(self, value, param, ctx):
        if value is None or value == "auto":
            return "auto"
        try:
            return int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not an integer or 'auto'", param, ctx)


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
        return numbers


def _load_config(ctx: click.Context, param, value):
    """--config FILE: its values become defaults, so flags and TRON_* variables still win."""
    if value is None:
        return None
    from tron_cli.errors import UsageError
    from tron_cli.training.config import load_config_file

    try:
        options, extras = load_config_file(Path(value))
    except UsageError as error:
        raise click.BadParameter(error.line(), ctx, param) from None
    if "batch_negatives" in options and options["batch_negatives"] is None:
        options["batch_negatives"] = "auto"  # the reference's null; a None default would mean "not given"
    ctx.meta["tron.config_options"] = options
    _set_defaults(ctx)
    ctx.meta["tron.config_extras"] = extras
    ctx.meta["tron.config_file"] = str(value)
    return value


def _load_preset(ctx: click.Context, param, value):
    """--preset NAME: its settings become defaults beneath --config's, so the file, TRON_* and flags still win."""
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
    if isinstance(example, tuple):  # a list of names (--track): repeatable, and one environment variable for every command
        return click.Option([flag, name], type=choices, multiple=True, default=None, envvar=f"TRON_{name.upper()}", help=help)
    if choices is not None:
        return click.Option([flag, name], type=choices if isinstance(choices, click.ParamType) else click.Choice(choices), default=None, help=help)
    if name == "batch_negatives":
        return click.Option([flag, name], type=_CountOrAuto(), default=None, help=help)
    return click.Option([flag, name], type=type(example) if example is not None else int, default=None, help=help)


def registry_options() -> list[click.Option]:
    """Training options; every model's settings after --model, every loss's options after --loss."""
    from tron_cli.choices import OBJECTIVES
    from tron_cli.losses import LOSSES, all_options
    from tron_cli.models import MODELS, all_settings
    from tron_cli.training import config
    from tron_cli.training.schedule import SCHEDULES

    choices: dict[str, Any] = {
        "model": RegistryChoice(MODELS),
        "loss": RegistryChoice(LOSSES),
        "sampling_style": config.SAMPLING_STYLES,
        "negative_distribution": config.DISTRIBUTIONS,
        "optimizer": config.OPTIMIZERS,
        "shuffle": config.SHUFFLES + tuple(config.SHUFFLE_ALIASES),
        "device": config.DEVICES,
        "precision": config.PRECISIONS,
        "lr_schedule": SCHEDULES,
        "track": RegistryChoice("tron_cli.tracking:TRACKERS"),
        "objective": OBJECTIVES,
    }
    out = [preset_option()]
    for f in fields(config.TrainConfig):
        if f.name not in config.TRAIN_FIELDS:
            continue
        shown = "auto" if f.default is None and f.name == "batch_negatives" else ("none" if f.default == () else f.default)
        shown = ",".join(f"{a:g}" for a in config.TrainConfig.beta) if f.name == "beta" else shown
        out.append(_option(f.name, f.default, HELP[f.name] + ("" if shown is None else f" [default: {shown}]"), choices.get(f.name)))
        if f.name == "model":
            for name, (default, help, setting_choices, models) in all_settings().items():
                defaults = "; ".join(f"{model}: {MODELS.get(model).settings()[name]}" for model in models)
                which = "" if len(models) == len(MODELS.names()) else f" (model {', '.join(models)} only)"
                out.append(_option(name, default, f"{help}{which} [default {defaults}]", setting_choices))
        if f.name == "loss":
            for name, (option, losses) in all_options().items():
                out.append(_option(name, option.default, f"{option.help} (--loss {', '.join(losses)}) [default: {option.default}]"))
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
@click.option("--force", is_flag=True, help="Replace an existing run dir.")
@click.option("--devices", type=click.IntRange(min=1), default=1, show_default=True, help="Processes for data-parallel training (DDP) on this machine.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout.")
@click.pass_context
def train(ctx: click.Context, data, data_option, out, resume, force, devices, as_json, **values) -> None:
    """Train TRON (SASRec with shared negatives, top-k and sampled softmax) or a baseline on a dataset.

    Reads DATA or --data (a dataset dir; default: the one named by --config's "dataset", else the
    newest under $TRON_HOME/data/). Writes a run dir: config.json (the resolved configuration),
    model.safetensors (the best epoch by validation Recall@20), history.jsonl (one line per epoch),
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
    """
    from tron_cli.errors import UsageError
    from tron_cli.losses import LOSSES, all_options
    from tron_cli.stages.train import TrainRequest
    from tron_cli.stages.train import train as run
    from tron_cli.training.config import MULTITRON_LOSS, PRESET_MODEL, SHUFFLE_ALIASES, TrainConfig, validate
    from tron_cli.workspace import home

    ui: UI = ctx.find_object(UI) or UI()
    if data is not None and data_option is not None and data != data_option:
        raise click.UsageError(f"give the dataset once: DATA ({data}) or --data ({data_option})")
    data = data or data_option
    explicit = {name for name in values if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    given = {name: value for name, value in values.items() if value is not None and value != ()}
    if "batch_negatives" in given and given["batch_negatives"] == "auto":
        given["batch_negatives"] = None
    if "shuffle" in given:
        given["shuffle"] = SHUFFLE_ALIASES.get(given["shuffle"], given["shuffle"])
    extras = ctx.meta.get("tron.config_extras", {})
    if data is None and "dataset" in extras and resume is None:
        data = home.datasets_root() / extras["dataset"]
    if resume is not None and (data is not None or out is not None):
        raise click.UsageError("--resume continues a run with its own dataset and dir: drop DATA and --out")
    loss = given.get("loss", MULTITRON_LOSS if given.get("objective") == "multitron" else TrainConfig.loss)
    for name in sorted(explicit & set(all_options())):
        if loss in LOSSES and name not in {option.name for option in LOSSES.get(loss).options}:
            raise click.UsageError(f"{_flag(name)} applies to --loss {', '.join(all_options()[name][1])}, not {loss}")
    model = given.get("model", TrainConfig.model)
    if "tron.preset" in ctx.meta and model != PRESET_MODEL:
        raise click.UsageError(f"--preset {ctx.meta['tron.preset']} configures {PRESET_MODEL}, not {model}: give {model}'s settings as flags")
    try:
        config = validate(TrainConfig.create(**given))
    except UsageError as error:
        raise click.UsageError(error.line()) from None
    reference = None
    if "tron.config_file" in ctx.meta:
        import json

        reference = json.loads(Path(ctx.meta["tron.config_file"]).read_text())
    request = TrainRequest(config, data, out=out, resume=resume, force=force, reference_config=reference, overrides=tuple(sorted(explicit)), devices=devices)
    summary = run(request, report=ui)
    summary["run"] = str(Path(summary["run"]).resolve())
    _show(ui, summary)
    if as_json:
        ui.emit_json(summary)


def _show(ui: UI, summary: dict) -> None:
    valid = summary.get("valid") or {}
    rows = [
        ["run", shown(summary["run"])],
        ["epochs", summary["epochs"]],
        ["best epoch", f"{summary['best_epoch']} ({summary['selected_by']})"],
        *([["valid hypervolume", valid["hypervolume"]]] if "hypervolume" in valid else []),
        ["valid Recall@20", valid.get("recall@20", valid.get("order_weight_0/recall@20", "-"))],
        ["valid MRR@20", valid.get("mrr@20", valid.get("order_weight_0/mrr@20", "-"))],
        ["final train loss", summary["loss"]],
        ["sessions/s", summary["sessions_per_s"]],
        ["events/s", summary["events_per_s"]],
        ["training time (s)", summary["train_seconds"]],
        ["device", summary["device"]],
    ]
    ui.table("training summary", ["", "value"], rows)
