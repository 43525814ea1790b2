"""Training configuration: one frozen dataclass, TRON XL's defaults, and the reference's JSON keys mapped onto it.

`tron train --config FILE` accepts the reference's configs (otto-de/TRON `configs/**.json`) unchanged, and
also the `train` section of a run's own `config.json`. Flags override the file (flags > TRON_* env > file >
defaults). `REFERENCE_KEYS` is the one table of how a reference key maps to an option; docs/train-options.md
is generated from it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from tron_cli.errors import UsageError

MODELS = ("sasrec", "gru4rec")
POSITIONS = ("right", "left")
LOSSES = ("ssm", "bce", "bpr-max", "gbce", "ce")
SAMPLING_STYLES = ("eventwise", "sessionwise", "batchwise")
DISTRIBUTIONS = ("uniform", "popularity")
OPTIMIZERS = ("adam", "adagrad", "sparse-adam", "sparse-adagrad")
SHUFFLES = ("no_shuffling", "shuffle_without_replacement", "shuffle_with_replacement")
# The reference's README spells them "shuffling_*" while its code reads "shuffle_*": both mean the same here.
SHUFFLE_ALIASES = {"shuffling_without_replacement": "shuffle_without_replacement", "shuffling_with_replacement": "shuffle_with_replacement"}
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of `tron train`; defaults are TRON XL's (configs/tron/otto.json of the reference)."""

    model: str = "sasrec"
    hidden_size: int = 200
    num_layers: int = 2
    num_heads: int = 1
    dropout: float = 0.05
    max_length: int = 50
    share_embeddings: bool = True
    output_bias: bool = False
    positions: str = "right"  # sasrec: right-aligned positions (TRON) or left-aligned (counted from the first click)
    original_gru: bool = False  # GRU4Rec: the embedding feeds the gates directly (identity input weights)
    final_activation: bool = False  # ELU(0.5) on scores before the loss, as the reference's GRU4Rec
    # negatives
    uniform_negatives: int = 16384
    batch_negatives: int | None = 127  # None: batch size - 1 (the reference's `null`)
    sampling_style: str = "batchwise"
    negative_distribution: str = "uniform"
    alpha: float = 1.0  # popularity draws are proportional to count ** alpha
    reject_uniform_session_items: bool = False
    reject_in_batch_items: bool = True
    topk: int = 100  # keep only the k highest-scoring negatives per event; 0 keeps all
    mask_hits: bool = True  # a negative equal to the target is not a negative (the reference keeps it)
    # loss
    loss: str = "ssm"
    bpr_penalty: float = 1.0
    gbce_t: float = 0.75
    logq: float = 0.0
    ce_chunk: int = 65536  # catalogue items scored at once by the full cross-entropy
    # optimisation
    epochs: int = 10
    batch_size: int = 128
    batch_size_per_device: int | None = None
    lr: float = 5e-4
    optimizer: str = "adam"
    shuffle: str = "no_shuffling"
    bucket_window: int = 0  # group sessions of similar length within windows of this many batches; 0 = off
    seed: int = 0
    early_stopping: int = 0  # stop after this many epochs without a better validation Recall@20; 0 = never
    valid_limit: float = 1.0  # a fraction (<= 1) or a number (> 1) of validation sessions scored per epoch
    overfit_batches: float = 0.0  # > 0: train on only this many batches (or this fraction) per epoch
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False

    @property
    def in_batch_negatives(self) -> int:
        return self.batch_size - 1 if self.batch_negatives is None else self.batch_negatives

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELD_NAMES = {f.name for f in fields(TrainConfig)}

# reference key -> our field, where the value carries over as it is
_DIRECT = {
    "model": "model",
    "hidden_size": "hidden_size",
    "num_layers": "num_layers",
    "dropout": "dropout",
    "num_batch_negatives": "batch_negatives",
    "num_uniform_negatives": "uniform_negatives",
    "reject_uniform_session_items": "reject_uniform_session_items",
    "reject_in_batch_items": "reject_in_batch_items",
    "sampling_style": "sampling_style",
    "loss": "loss",
    "bpr_penalty": "bpr_penalty",
    "max_epochs": "epochs",
    "batch_size": "batch_size",
    "max_session_length": "max_length",
    "lr": "lr",
    "limit_val_batches": "valid_limit",
    "overfit_batches": "overfit_batches",
    "share_embeddings": "share_embeddings",
    "output_bias": "output_bias",
    "shuffling_style": "shuffle",
    "optimizer": "optimizer",
    "original_gru": "original_gru",
    "final_activation": "final_activation",
}

# The documentation of every reference key: the direct ones, plus those that convert.
REFERENCE_KEYS: dict[str, str] = {
    **_DIRECT,
    "dataset": "DATA (a dataset name under $TRON_HOME/data/, unless DATA is given)",
    "topk_sampling": "topk (false: 0)",
    "topk_sampling_k": "topk (when topk_sampling is true)",
    "accelerator": "device (gpu: auto, cpu: cpu)",
}


def _check_type(path: Path, key: str, value: Any, field_name: str) -> Any:
    """Type-check one value against the dataclass field's default type; name the key when it is wrong."""
    default = getattr(TrainConfig(), field_name)
    if field_name == "batch_negatives" and value is None:
        return None
    expected = type(default) if default is not None else int
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise UsageError(f"{path}: key {key!r} must be {expected.__name__}, got {value!r}", "Fix the config file")
    return value


def load_config_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(options for TrainConfig fields, extras such as the dataset name) from a reference or tron config file."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}:{error.lineno}: not valid JSON ({error.msg})", "Fix the config file") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path}: a config file must hold one JSON object")
    if document.get("schema", "").startswith("run/"):
        document = dict(document.get("train", {}))
        extras = {}
        for key, value in document.items():
            if key not in FIELD_NAMES:
                raise UsageError(f"{path}: unknown key {key!r} in train", "Remove it, or check the spelling")
        return {key: _check_type(path, key, value, key) for key, value in document.items()}, extras
    options: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for key, value in document.items():
        if key in _DIRECT:
            name = _DIRECT[key]
            if name in ("sampling_style", "loss", "model", "optimizer", "shuffle") and not isinstance(value, str):
                raise UsageError(f"{path}: key {key!r} must be a string, got {value!r}", "Fix the config file")
            if name == "shuffle":
                value = SHUFFLE_ALIASES.get(value, value)
            if name in ("valid_limit", "overfit_batches") and not isinstance(value, bool) and isinstance(value, (int, float)):
                value = float(value)
            options[name] = _check_type(path, key, value, name)
        elif key == "dataset":
            if not isinstance(value, str):
                raise UsageError(f"{path}: key 'dataset' must be a dataset name, got {value!r}")
            extras["dataset"] = value
        elif key == "accelerator":
            if value not in ("gpu", "cuda", "cpu", "auto"):
                raise UsageError(f"{path}: key 'accelerator' must be gpu or cpu, got {value!r}")
            # "gpu" means "use the GPU when there is one": a reference config must also run on a laptop
            options["device"] = "cpu" if value == "cpu" else "auto"
        elif key in ("topk_sampling", "topk_sampling_k"):
            continue
        elif key in FIELD_NAMES:
            options[key] = _check_type(path, key, value, key)
        else:
            raise UsageError(f"{path}: unknown key {key!r}", f"Known keys: {', '.join(sorted(REFERENCE_KEYS))} (or tron's own option names)")
    if "topk_sampling" in document or "topk_sampling_k" in document:
        enabled = _check_type(path, "topk_sampling", document.get("topk_sampling", False), "mask_hits")
        k = _check_type(path, "topk_sampling_k", document.get("topk_sampling_k", 1000), "topk")
        options["topk"] = k if enabled else 0
    return options, extras


def validate(config: TrainConfig, n_items: int | None = None) -> TrainConfig:
    """Reject inconsistent options with a message naming them (exit 2)."""
    checks = [
        (config.model in MODELS, f"--model must be one of {', '.join(MODELS)}"),
        (config.loss in LOSSES, f"--loss must be one of {', '.join(LOSSES)}"),
        (config.sampling_style in SAMPLING_STYLES, f"--sampling-style must be one of {', '.join(SAMPLING_STYLES)}"),
        (config.negative_distribution in DISTRIBUTIONS, f"--negative-distribution must be one of {', '.join(DISTRIBUTIONS)}"),
        (config.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
        (config.shuffle in SHUFFLES, f"--shuffle must be one of {', '.join(SHUFFLES)}"),
        (config.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}"),
        (config.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}"),
        (config.max_length >= 1, "--max-length must be at least 1"),
        (config.positions in POSITIONS, f"--positions must be one of {', '.join(POSITIONS)}"),
        (config.hidden_size >= 1 and config.num_layers >= 1, "--hidden-size and --num-layers must be at least 1"),
        (config.hidden_size % config.num_heads == 0, f"--hidden-size {config.hidden_size} must be divisible by --num-heads {config.num_heads}"),
        (0 <= config.dropout < 1, "--dropout must be in [0, 1)"),
        (config.batch_size >= 1, "--batch-size must be at least 1"),
        (config.epochs >= 1, "--epochs must be at least 1"),
        (config.lr > 0, "--lr must be positive"),
        (config.uniform_negatives >= 0, "--uniform-negatives must be >= 0"),
        (0 <= config.in_batch_negatives < config.batch_size, f"--batch-negatives ({config.in_batch_negatives}) must be >= 0 and smaller than --batch-size ({config.batch_size})"),
        (config.loss == "ce" or config.uniform_negatives + config.in_batch_negatives > 0, "a sampled loss needs negatives: set --uniform-negatives or --batch-negatives"),
        (config.topk >= 0, "--topk must be >= 0"),
        (config.loss == "ce" or config.topk <= config.uniform_negatives + config.in_batch_negatives, f"--topk {config.topk} is larger than the {config.uniform_negatives + config.in_batch_negatives} negatives drawn per event"),
        (config.alpha >= 0, "--alpha must be >= 0"),
        (config.logq >= 0, "--logq must be >= 0"),
        (config.logq == 0 or config.loss in ("ssm", "bpr-max"), "--logq corrects sampled softmax losses only: use it with --loss ssm or bpr-max"),
        (config.ce_chunk >= 1, "--ce-chunk must be at least 1"),
        (config.early_stopping >= 0, "--early-stopping must be >= 0"),
        (config.bucket_window >= 0, "--bucket-window must be >= 0"),
        (config.bucket_window == 0 or config.model == "sasrec", "--bucket-window groups SASRec batches; gru4rec walks sessions click by click"),
        (config.valid_limit > 0, "--valid-limit must be positive"),
        (config.overfit_batches >= 0, "--overfit-batches must be >= 0"),
        (not config.optimizer.startswith("sparse") or config.loss != "ce", "--loss ce updates every item row each step: use a dense optimizer (adam or adagrad)"),
        (config.model != "gru4rec" or config.sampling_style != "eventwise", "gru4rec feeds one event per session per step: use --sampling-style batchwise or sessionwise"),
        (config.batch_size_per_device is None or config.batch_size_per_device >= 1, "--batch-size-per-device must be at least 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    if n_items is not None and config.loss != "ce" and config.negative_distribution == "uniform" and config.reject_uniform_session_items and n_items < 2:
        raise UsageError("rejecting session items needs a catalogue of more than one item")
    return config


def build(options: dict[str, Any]) -> TrainConfig:
    """A validated config from option values; unknown names are a usage error."""
    unknown = sorted(set(options) - FIELD_NAMES)
    if unknown:
        raise UsageError(f"unknown training option {unknown[0]!r}")
    return validate(replace(TrainConfig(), **options))
