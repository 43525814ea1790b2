"""`tron train`: a dataset in, a run dir (config.json, model.safetensors, history.jsonl, checkpoint/) out."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click
from click.core import ParameterSource

from tron_cli.cli._ui import UI, pass_ui
from tron_cli.config import DEVICES, DISTRIBUTIONS, LOSSES, MODELS, OPTIMIZERS, POSITIONS, PRECISIONS, SAMPLING_STYLES, SHUFFLES, SHUFFLE_ALIASES, TrainConfig

# The reference's GRU4Rec+ (configs/standard/gru4rec_*.json): `--model gru4rec` starts from these instead of TRON XL's.
GRU4REC_DEFAULTS = {
    "hidden_size": 100,
    "num_layers": 1,
    "dropout": 0.0,
    "uniform_negatives": 2048,
    "batch_negatives": None,
    "loss": "bpr-max",
    "bpr_penalty": 0.5,
    "batch_size": 32,
    "max_length": 200,
    "lr": 0.2,
    "output_bias": True,
    "final_activation": True,
    "optimizer": "adagrad",
    "topk": 0,
}

HELP = {
    "model": "sasrec (TRON) or gru4rec (GRU4Rec+, whose defaults become the reference's).",
    "hidden_size": "Hidden size d.",
    "num_layers": "Transformer blocks (or GRU layers).",
    "num_heads": "Attention heads.",
    "dropout": "Dropout rate.",
    "max_length": "Clicks per training window (the last max_length + 1 of each session).",
    "share_embeddings": "Tie input and output item embeddings.",
    "output_bias": "Learn a bias per item.",
    "positions": "sasrec: right-aligned positions (TRON: the newest click is always last) or left (counted from the session's first click, so a prefix's state is what it is inside the whole session).",
    "original_gru": "gru4rec: the embedding feeds the gates directly (3 x hidden wide).",
    "final_activation": "ELU(0.5) on scores before the loss (the reference's GRU4Rec).",
    "uniform_negatives": "Uniform (or popularity) negatives drawn per batch/session/event.",
    "batch_negatives": "In-batch negatives per session, from other sessions' clicks ('auto': batch size - 1).",
    "sampling_style": "How uniform negatives are shared: per event, per session or per batch.",
    "negative_distribution": "Draw negatives uniformly or by popularity (count ** alpha).",
    "alpha": "Popularity exponent for --negative-distribution popularity.",
    "reject_uniform_session_items": "Never draw a click of the session (of the batch, batchwise) as a uniform negative.",
    "reject_in_batch_items": "Never take a session's own clicks as its in-batch negatives.",
    "topk": "Keep only the k highest-scoring negatives per event (0 keeps all).",
    "mask_hits": "Mask negatives equal to the target (--no-mask-hits: the reference's behaviour).",
    "loss": "ssm (sampled softmax), bce, bpr-max, gbce (gSASRec), ce (full softmax).",
    "bpr_penalty": "Score regularisation of bpr-max.",
    "gbce_t": "Calibration t of gbce (0: plain binary cross-entropy).",
    "logq": "LogQ correction weight for sampled softmax losses (0 off, 1 full).",
    "ce_chunk": "Catalogue items scored at once by --loss ce (bounds its memory).",
    "epochs": "Training epochs.",
    "batch_size": "Sessions per step (per device unless --batch-size-per-device).",
    "batch_size_per_device": "Sessions per step on each device with --devices (default: --batch-size / N).",
    "lr": "Learning rate (constant).",
    "optimizer": "adam, adagrad, or a row-sparse variant that updates only the item rows a step touched.",
    "shuffle": "Session order per epoch (reference names; 'shuffling_*' spellings accepted).",
    "bucket_window": "Put sessions of similar length in the same batch, within windows of N batches (less padding; 0: off).",
    "seed": "Seed of every random draw (initialisation, dropout, order, negatives).",
    "early_stopping": "Stop after N epochs without a better validation Recall@20 (0: never).",
    "valid_limit": "Validation sessions per epoch: a fraction (<= 1) or a number.",
    "overfit_batches": "Train on only this many batches (or this fraction) per epoch, for debugging.",
    "device": "auto (CUDA when present), cpu or cuda.",
    "precision": "auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16 or fp16.",
    "compile": "torch.compile the model.",
}
CHOICES = {
    "model": MODELS,
    "positions": POSITIONS,
    "loss": LOSSES,
    "sampling_style": SAMPLING_STYLES,
    "negative_distribution": DISTRIBUTIONS,
    "optimizer": OPTIMIZERS,
    "shuffle": SHUFFLES + tuple(SHUFFLE_ALIASES),
    "device": DEVICES,
    "precision": PRECISIONS,
}


class _CountOrAuto(click.ParamType):
    name = "INTEGER|auto"

    def convert(self, value, param, ctx):
        if value is None or value == "auto":
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not an integer or 'auto'", param, ctx)


def _load_config(ctx: click.Context, param, value):
    """--config FILE: its values become defaults, so flags and TRON_* variables still win."""
    if value is None:
        return None
    from tron_cli.config import load_config_file
    from tron_cli.errors import UsageError

    try:
        options, extras = load_config_file(Path(value))
    except UsageError as error:
        raise click.BadParameter(error.line(), ctx, param) from None
    ctx.default_map = {**(ctx.default_map or {}), **options}
    ctx.meta["tron.config_extras"] = extras
    ctx.meta["tron.config_file"] = str(value)
    return value


def _options(function):
    """One click option per TrainConfig field, typed from the field's default."""
    defaults = TrainConfig()
    for field in reversed(fields(TrainConfig)):
        name, default = field.name, getattr(defaults, field.name)
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            decorator = click.option(f"{flag}/--no-{name.replace('_', '-')}", name, default=default, show_default=True, help=HELP[name])
        elif name in CHOICES:
            decorator = click.option(flag, name, type=click.Choice(CHOICES[name]), default=default, show_default=True, help=HELP[name])
        elif name == "batch_negatives":
            decorator = click.option(flag, name, type=_CountOrAuto(), default=default, show_default=True, help=HELP[name])
        elif name == "batch_size_per_device":
            decorator = click.option(flag, name, type=int, default=None, help=HELP[name])
        else:
            decorator = click.option(flag, name, type=type(default), default=default, show_default=True, help=HELP[name])
        function = decorator(function)
    return function


@click.command(short_help="Train TRON (or SASRec, GRU4Rec+ and other losses) on a dataset.", context_settings={"show_default": True})
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), is_eager=True, expose_value=False, callback=_load_config, help="A reference TRON config (JSON) or a run's config.json; flags override it.")
@click.option("--out", type=click.Path(path_type=Path), help="Run dir (default: $TRON_HOME/runs/DATASET-MODEL-N).")
@click.option("--resume", type=click.Path(path_type=Path), help="Continue the run in this dir from its checkpoint.")
@click.option("--force", is_flag=True, help="Replace an existing run dir.")
@click.option("--devices", type=click.IntRange(min=1), default=1, help="Processes for data-parallel training (DDP) on this machine.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout.")
@_options
@click.pass_context
def train(ctx: click.Context, data, out, resume, force, devices, as_json, **values) -> None:
    """Train TRON (SASRec with shared negatives, top-k and sampled softmax) or a baseline on a dataset.

    Reads DATA (a dataset dir; default: the one named by --config's "dataset", else the newest under
    $TRON_HOME/data/). Writes a run dir: config.json (the resolved configuration), model.safetensors
    (the best epoch by validation Recall@20), history.jsonl (one line per epoch), checkpoint/ (to
    --resume), summary.json (when finished). Defaults are TRON XL's.

    \b
    Examples:
        tron train                                   # TRON XL on the newest dataset
        tron train data/yoochoose --loss ssm --topk 100 --epochs 5
        tron train --config configs/tron/otto.json --epochs 1
        tron train --model gru4rec                   # GRU4Rec+ with the reference's settings
        tron train --resume runs/otto-sasrec-1 --epochs 12
    """
    from tron_cli import home
    from tron_cli.config import SHUFFLE_ALIASES as aliases
    from tron_cli.config import TrainConfig as Config
    from tron_cli.errors import UsageError
    from tron_cli.train import TrainRequest
    from tron_cli.train import train as run

    ui: UI = ctx.find_object(UI) or UI()
    explicit = {name for name in values if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    configured = explicit | {name for name in values if ctx.get_parameter_source(name) == ParameterSource.DEFAULT_MAP}
    values["shuffle"] = aliases.get(values["shuffle"], values["shuffle"])
    if values["model"] == "gru4rec":
        values.update({name: value for name, value in GRU4REC_DEFAULTS.items() if name not in configured})
    extras = ctx.meta.get("tron.config_extras", {})
    if data is None and "dataset" in extras and resume is None:
        data = home.datasets_root() / extras["dataset"]
    if resume is not None and (data is not None or out is not None):
        raise click.UsageError("--resume continues a run with its own dataset and dir: drop DATA and --out")
    try:
        from tron_cli.config import validate

        config = validate(Config(**values))
    except UsageError as error:
        raise click.UsageError(error.line()) from None
    reference = None
    if "tron.config_file" in ctx.meta:
        import json

        reference = json.loads(Path(ctx.meta["tron.config_file"]).read_text())
    request = TrainRequest(config, data, out, resume, force, reference, tuple(sorted(explicit)))
    if devices > 1:
        from tron_cli.distributed import launch

        summary = launch(request, devices, ui)
    else:
        summary = run(request, report=ui)
    _show(ui, summary)
    if as_json:
        ui.emit_json(summary)


def _show(ui: UI, summary: dict) -> None:
    valid = summary.get("valid") or {}
    rows = [
        ["run", summary["run"]],
        ["epochs", summary["epochs"]],
        ["best epoch", f"{summary['best_epoch']} ({summary['selected_by']})"],
        ["valid Recall@20", valid.get("recall@20", "-")],
        ["valid MRR@20", valid.get("mrr@20", "-")],
        ["final train loss", summary["loss"]],
        ["sessions/s", summary["sessions_per_s"]],
        ["events/s", summary["events_per_s"]],
        ["training time (s)", summary["train_seconds"]],
        ["device", summary["device"]],
    ]
    ui.table("training summary", ["", "value"], rows)
