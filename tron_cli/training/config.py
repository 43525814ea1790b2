"""Training configuration: one frozen dataclass holding the model's own config and the loss's own options.

Options have flat names everywhere a person types them (`--hidden-size`, a config file's `hidden_size`,
`TRON_TRAIN_HIDDEN_SIZE`); `TrainConfig.create(**options)` sorts them into the chosen model's settings (its
config dataclass, `models/`), the chosen loss's options (`losses.LOSSES`) and the training options below,
starting from the model's training defaults (GRU4Rec+ takes the reference's). `tron train --config FILE`
accepts the reference's configs (otto-de/TRON `configs/**.json`) unchanged, and a run's own `config.json`.
Flags override the file (flags > TRON_* env > file > model defaults > defaults).

Each training option is declared once, as its field below (`options.option`: default, help, choices, the
reference's key, `tron tune`'s range); `tron train`'s flags and help, the reference-key table
(`reference_keys`), docs/train-options.md, the man page and the tune space derive from the declarations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tron_cli.choices import DEVICES, OBJECTIVES, PRECISIONS
from tron_cli.errors import UsageError
from tron_cli.evaluation.procedures import parse_metric
from tron_cli.inference.transitions import DEFAULT_SMOOTHING
from tron_cli.losses import LOSSES, all_options
from tron_cli.models import MODELS, all_settings, setting_declarations
from tron_cli.options import Option, claim, declared, number_problem, option
from tron_cli.safe_json import JsonRefused, parse
from tron_cli.tracking import TRACKERS
from tron_cli.training.schedule import SCHEDULES

SAMPLING_STYLES = ("eventwise", "sessionwise", "batchwise")
KNN_SIMILARITIES = ("sknn", "vsknn")  # inference.knn.SIMILARITIES, named here without importing torch
GRIDS = ("transition_grid", "knn_grid", "repeat_grid")  # options that hold a list of weights
# choices read from a registry when they are used ("module:REGISTRY"), so that a plugin's entries count
MODELS_CHOICE, LOSSES_CHOICE, TRACKERS_CHOICE = "tron_cli.models:MODELS", "tron_cli.losses:LOSSES", "tron_cli.tracking:TRACKERS"
DISTRIBUTIONS = ("uniform", "popularity")
OPTIMIZERS = ("adam", "adagrad", "sparse-adam", "sparse-adagrad")
SHUFFLES = ("no_shuffling", "shuffle_without_replacement", "shuffle_with_replacement")
# The reference's README spells them "shuffling_*" while its code reads "shuffle_*": both mean the same here.
SHUFFLE_ALIASES = {"shuffling_without_replacement": "shuffle_without_replacement", "shuffling_with_replacement": "shuffle_with_replacement"}


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of `tron train`; defaults are TRON XL's (configs/tron/otto.json of the reference).

    Build it with `TrainConfig.create(**options)` to get a model's training defaults and flat option names;
    the constructor takes `network` (the model's config dataclass) and `loss_options` as they are."""

    model: str = option(
        "sasrec", "The model to train; each starts from its own defaults (gru4rec: the reference's GRU4Rec+).", MODELS_CHOICE, reference="model"
    )
    network: Any = None  # the model's config dataclass (models/<model>.py); None: the model's defaults
    # negatives
    uniform_negatives: int = option(
        16384, "Uniform (or popularity) negatives drawn per batch/session/event.", reference="num_uniform_negatives", tune=(1024, 2048, 4096)
    )
    # None: batch size - 1 (the reference's `null`; TRON XL's 127 at batch 128)
    batch_negatives: int | None = option(
        None, "In-batch negatives per session, from other sessions' clicks (auto: batch size - 1, TRON XL's 127 at batch 128).", reference="num_batch_negatives"
    )
    sampling_style: str = option(
        "batchwise", "How uniform negatives are shared: per event, per session or per batch.", SAMPLING_STYLES, reference="sampling_style"
    )
    negative_distribution: str = option("uniform", "Draw negatives uniformly or by popularity (count ** alpha).", DISTRIBUTIONS)
    alpha: float = option(1.0, "Popularity exponent for --negative-distribution popularity.")
    reject_uniform_session_items: bool = option(
        False, "Never draw a click of the session (of the batch, batchwise) as a uniform negative.", reference="reject_uniform_session_items"
    )
    reject_in_batch_items: bool = option(True, "Never take a session's own clicks as its in-batch negatives.", reference="reject_in_batch_items")
    topk: int = option(100, "Keep only the k highest-scoring negatives per event (0 keeps all).", tune=(0, 100))
    mask_hits: bool = option(True, "Mask negatives equal to the target (--no-mask-hits: the reference's behaviour).")
    # loss
    loss: str = option("ssm", "The training objective.", LOSSES_CHOICE, reference="loss", tune=("ssm", "ce"))
    loss_options: Mapping[str, Any] = field(default_factory=dict)  # the loss's own options (losses.LOSSES); missing ones take their defaults
    logq: float = option(0.0, "LogQ correction weight for sampled softmax losses (0 off, 1 full).")
    # MultiTRON: a preference vector [click weight, order weight] ~ Dirichlet(beta) per step, read by the model
    objective: str = option(
        "click",
        "click: the next click; multitron: clicks and orders, one model for every trade-off, read as a preference vector (MultiTRON).",
        OBJECTIVES,
    )
    beta: tuple[float, ...] = option(
        (1.0, 1.0), "MultiTRON: the Dirichlet concentration of each step's preference vector: A (for A,A) or A,B.", reference="beta"
    )  # one value a: Dirichlet(a, a)
    # optimisation
    epochs: int = option(10, "Training epochs.", reference="max_epochs")
    batch_size: int = option(128, "Sessions per step (per device unless --batch-size-per-device).", reference="batch_size")
    batch_size_per_device: int | None = option(None, "Sessions per step on each device with --devices (default: --batch-size / N).")
    lr: float = option(5e-4, "Learning rate (the peak, under --lr-schedule).", reference="lr", tune={"low": 1e-4, "high": 3e-3, "log": True})
    lr_schedule: str = option("constant", "Learning rate over the run: constant, or cosine / linear decay to zero over all --epochs.", SCHEDULES)
    warmup_steps: int = option(0, "Raise the learning rate linearly from 0 over this many first steps.")
    optimizer: str = option("adam", "adam, adagrad, or a row-sparse variant that updates only the item rows a step touched.", OPTIMIZERS, reference="optimizer")
    shuffle: str = option(
        "no_shuffling",
        "Session order per epoch (reference names; 'shuffling_*' spellings accepted).",
        SHUFFLES + tuple(SHUFFLE_ALIASES),
        reference="shuffling_style",
    )
    bucket_window: int = option(0, "Put sessions of similar length in the same batch, within windows of N batches (less padding; 0: off).")
    seed: int = option(0, "Seed of every random draw (initialisation, dropout, order, negatives).")
    early_stopping: int = option(0, "Stop after N epochs without a better validation --select-on metric (0: never).")
    # a new run's defaults are its dataset's (dataset.json `evaluation`, put beneath every other source by `tron_cli.train`)
    select_on: str = option(
        "recall@20",
        "Validation metric that selects the best epoch: recall@K, mrr@K or ndcg@K.",
        shown_default="the dataset's: ndcg@10 on leave-one-out data, else recall@20",
    )
    exclude_seen: bool = option(
        False,
        "Validate without the session's own clicks in the ranking (as tron evaluate --exclude-seen).",
        shown_default="the dataset's: on for leave-one-out data without blend grids",
    )
    valid_limit: float = option(1.0, "Validation sessions per epoch: a fraction (<= 1) or a number.", reference="limit_val_batches")
    # a first-order transition prior added to every score outside training (inference/transitions.py); 0 = off
    transition_weight: float = option(
        0.0,
        "Add W * log(1 + P(item | last click) / --transition-smoothing) to every score outside training, P counted on the train split (a Markov prior; 0: off).",
    )
    transition_smoothing: float = option(DEFAULT_SMOOTHING, "Additive smoothing alpha of the transition prior's probabilities.")
    # session kNN over the train split and the repeat boost, blended the same way (inference/knn.py, inference/blends.py)
    knn_weight: float = option(
        0.0,
        "Add K * (session-kNN score / the session's largest) to every score outside training: the 100 most similar of the 500 most recent train sessions sharing an item vote (0: off).",
    )
    knn_similarity: str = option("sknn", "The session kNN of --knn-weight: sknn (cosine of item sets) or vsknn (recency-weighted overlap).", KNN_SIMILARITIES)
    repeat_weight: float = option(
        0.0, "Add R / r to the score of an item the session clicked, r = 1 for its last click, 2 for the one before, ... outside training (0: off)."
    )
    # grids: the weights chosen on the validation split when training ends (training/blending.py)
    transition_grid: tuple[float, ...] = option(
        (), "Choose --transition-weight among these values (comma-separated) on the validation split when training ends (empty: keep it)."
    )
    knn_grid: tuple[float, ...] = option((), "Choose --knn-weight among these values (comma-separated) on the validation split when training ends.")
    knn_similarities: tuple[str, ...] = option(
        (), "Choose --knn-similarity among these (repeatable) on the validation split when training ends, with --knn-grid.", KNN_SIMILARITIES
    )
    repeat_grid: tuple[float, ...] = option((), "Choose --repeat-weight among these values (comma-separated) on the validation split when training ends.")
    blend_select_on: str = option(
        "recall@20+mrr@20", "Validation value that chooses among the grids' combinations: METRIC@K or a sum of them (ties: the smaller weights)."
    )
    overfit_batches: float = option(0.0, "Train on only this many batches (or this fraction) per epoch, for debugging.", reference="overfit_batches")
    device: str = option("auto", "auto (CUDA when present), cpu or cuda.", DEVICES)
    precision: str = option("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16 or fp16.", PRECISIONS)
    compile: bool = option(False, "torch.compile the model and the loss (batch widths and event counts rounded up to a few static shapes).")
    track: tuple[str, ...] = option(
        (), "Record the run with an experiment tracker (repeatable; also TRON_TRACK): mlflow, tensorboard.", TRACKERS_CHOICE
    )  # experiment trackers (tracking.TRACKERS) that record the run

    def __post_init__(self) -> None:
        spec = MODELS.get(self.model, "--model")
        if self.network is None:
            object.__setattr__(self, "network", spec.config_class())
        elif not isinstance(self.network, spec.config_class):
            raise UsageError(f"the network config of model {self.model} must be a {spec.config_class.__name__}, not {type(self.network).__name__}")
        object.__setattr__(self, "loss_options", LOSSES.get(self.loss, "--loss").resolve(self.loss_options))
        object.__setattr__(self, "track", tuple(self.track))  # config.json stores a list
        object.__setattr__(self, "beta", tuple(self.beta) * (2 if len(tuple(self.beta)) == 1 else 1))  # a -> (a, a)
        object.__setattr__(self, "select_on", str(self.select_on).lower())  # NDCG@10 names the metric ndcg@10
        for name in GRIDS:  # config.json and config files store lists
            object.__setattr__(self, name, tuple(float(value) for value in getattr(self, name)))
        object.__setattr__(self, "knn_similarities", tuple(self.knn_similarities))
        object.__setattr__(self, "blend_select_on", str(self.blend_select_on).lower())

    @classmethod
    def create(cls, **options: Any) -> TrainConfig:
        """A config from flat options (model settings, loss options and training options by name), over the
        chosen model's training defaults. Options of another loss are ignored (reference configs always carry
        `bpr_penalty`); settings of another model and unknown names are usage errors."""
        model = options.get("model", cls.model)
        spec = MODELS.get(model, "--model")
        values = {**spec.training_defaults, **options}
        settings = spec.settings()
        loss_name = values.get("loss", cls.loss)
        if "objective" not in values and loss_name in LOSSES and len(LOSSES.get(loss_name).objectives) > 1:
            values["objective"] = "multitron"  # a reference MultiTRON config names only its loss
        if values.get("objective") == "multitron":
            values.setdefault("loss", MULTITRON_LOSS)
            if "preference" in settings:  # the model's own setting: only the model knows how it reads the vector
                values.setdefault("preference", True)
        network = {name: values.pop(name) for name in list(values) if name in settings}
        losses = all_options()
        loss = values.get("loss", cls.loss)
        own = {option.name for option in LOSSES.get(loss, "--loss").options}
        loss_options = {name: values.pop(name) for name in list(values) if name in losses}
        loss_options = {name: value for name, value in loss_options.items() if name in own}
        for name in values:
            if name in all_settings():
                raise UsageError(f"--{name.replace('_', '-')} is a setting of model {', '.join(all_settings()[name][3])}, not of {model}")
            if name not in TRAIN_FIELDS:
                raise UsageError(f"unknown training option {name!r}")
        return cls(network=spec.config(network), loss_options=loss_options, **values)

    @property
    def in_batch_negatives(self) -> int:
        return self.batch_size - 1 if self.batch_negatives is None else self.batch_negatives

    @property
    def max_length(self) -> int:
        """Clicks of a session the model reads (training windows are one longer)."""
        return int(self.network.max_length)

    def to_dict(self) -> dict[str, Any]:
        """The `train` section of config.json: training options and the loss's options, flat (the model's
        settings are the `model` section)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("network", "loss_options")}
        return {**out, **self.loss_options}

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> TrainConfig:
        """The config of a run from its config.json (`train` and `model` sections; runs of earlier versions
        kept the model's settings in `train` too)."""
        train = dict(document.get("train") or {})
        model = document.get("model") or {}
        spec = MODELS.get(train.get("model", cls.model))
        settings = spec.settings()
        values = {k: v for k, v in train.items() if k not in all_settings() or k in settings}
        values.update({k: v for k, v in model.items() if k in settings})
        return cls.create(**values)


TRAIN_OPTIONS: dict[str, Option] = declared(TrainConfig)
TRAIN_FIELDS = set(TRAIN_OPTIONS)
claim("training", "the training options", TRAIN_FIELDS)
MULTITRON_LOSS = "ssm_and_be"  # what --objective multitron trains unless --loss says


@dataclass(frozen=True)
class TrainPreset:
    """Named settings of `tron train --preset NAME`, under --config, TRON_* variables and flags."""

    summary: str  # one line for --help and docs/train-options.md
    options: Mapping[str, Any]  # flat option names, as TrainConfig.create takes them


# TRON (SASRec) configurations by name; `tron train --help` and docs/train-options.md list them from here.
PRESETS: dict[str, TrainPreset] = {
    "small": TrainPreset(
        "a CPU-sized TRON: d 64, 1,024 uniform negatives, length buckets of 32 batches",
        {"hidden_size": 64, "uniform_negatives": 1024, "bucket_window": 32},
    ),
    "xl": TrainPreset("TRON XL, the defaults: d 200, 16,384 batchwise uniform + batch size - 1 in-batch negatives, top-100, sampled softmax", {}),
    "reference": TrainPreset("TRON XL as the reference code trains it: accidental hits stay among the negatives", {"mask_hits": False}),
    "session": TrainPreset(
        "the recipe for session data (yoochoose, Tmall, Nowplaying): TRON d 200 with cosine scores (temperature 0.1), dropout 0.3, left-aligned"
        " positions, 4,096 + 127 negatives, top-100, windows of 50 clicks, lr 0.001 under a cosine decay over 8 epochs; the best epoch by"
        " validation MRR@20 (stopping after 2 without a better one), then the transition prior, session kNN and repeat boost chosen on"
        " validation by Recall@20 + MRR@20",
        {
            "uniform_negatives": 4096,
            "batch_negatives": 127,
            "topk": 100,
            "max_length": 50,
            "hidden_size": 200,
            "num_layers": 2,
            "dropout": 0.3,
            "positions": "left",
            "temperature": 0.1,
            "bucket_window": 32,
            "lr": 0.001,
            "lr_schedule": "cosine",
            "epochs": 8,
            "select_on": "mrr@20",
            "early_stopping": 2,
            "transition_grid": (0.0, 0.5, 1.0, 2.0, 3.0),
            "knn_grid": (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
            "knn_similarities": ("sknn", "vsknn"),
            "repeat_grid": (0.0, 0.5, 1.0, 2.0, 4.0, 8.0),
            "blend_select_on": "recall@20+mrr@20",
        },
    ),
    "sequential": TrainPreset(
        "the recipe for leave-one-out sequential data (Amazon Beauty, Sports, Toys): the published SASRec+ network (d 64, 2 blocks of"
        " the original SASRec, 1 head, N(0, 0.02) initialisation, left-aligned positions, dropout 0.5, windows of 50) trained with full"
        " cross-entropy at lr 0.001, batch 128, up to 40 epochs; the best epoch by the dataset's metric (stopping after 3 without a"
        " better one)",
        {
            "loss": "ce",
            "uniform_negatives": 0,
            "batch_negatives": 0,
            "topk": 0,
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 1,
            "dropout": 0.5,
            "block": "sasrec",
            "init": "normal",
            "positions": "left",
            "max_length": 50,
            "batch_size": 128,
            "lr": 0.001,
            "epochs": 40,
            "early_stopping": 3,
        },
    ),
}
PRESET_MODEL = "sasrec"  # the model the presets configure


def fit_hints(config: TrainConfig, n_items: int, device: str, threads: int) -> list[str]:
    """What to say once before training when the settings do not fit the catalogue or the machine."""
    hints = []
    sampled = LOSSES.get(config.loss).sampled
    if sampled and config.negative_distribution == "uniform" and config.uniform_negatives > n_items:
        fewer = 1 << max(0, (n_items // 2).bit_length() - 1)  # a power of two at most half the catalogue
        hints.append(
            f"{config.uniform_negatives:,} uniform negatives are drawn from a catalogue of {n_items:,} items, so most repeat:"
            f" --uniform-negatives {fewer} (or --loss ce, a full softmax over {n_items:,} items) fits it"
        )
    hidden = getattr(config.network, "hidden_size", 0)
    small = PRESETS["small"].options
    # only what the chosen loss uses: a full softmax draws no negatives, so its cost on a CPU is d's alone
    large = [f"d {hidden}"] if hidden > small["hidden_size"] else []
    if sampled and config.uniform_negatives > small["uniform_negatives"]:
        large.append(f"{config.uniform_negatives:,} uniform negatives")
    if device == "cpu" and config.model == PRESET_MODEL and large:
        on_cpu = f"training on the CPU ({threads} thread{'s' if threads != 1 else ''}) with {' and '.join(large)}, settings sized for a GPU"
        if sampled:
            flags = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in small.items())
            hints.append(f"{on_cpu} (TRON XL takes about an hour on 2 cores for the default synthetic set): --preset small ({flags}) trains in minutes")
        else:
            hints.append(f"{on_cpu}: --hidden-size {small['hidden_size']} trains in minutes")
    return hints


def all_declarations() -> dict[str, Option]:
    """Every option `create` takes, by flat name: training options, every model's settings (the first model's
    declaration of a shared one), every loss's options."""
    return {**TRAIN_OPTIONS, **setting_declarations(), **{name: declaration for name, (declaration, _) in all_options().items()}}


def option_defaults() -> dict[str, Any]:
    """{flat option name: default} of everything `create` takes (model settings: the first model's default)."""
    return {name: declaration.default for name, declaration in all_declarations().items()}


def direct_keys() -> dict[str, str]:
    """Reference key -> our option, for the keys whose value carries over as it is (each option's `reference`)."""
    return {declaration.reference: name for name, declaration in all_declarations().items() if declaration.reference}


# The reference's keys whose value converts, and what they become.
CONVERTED_KEYS = {
    "dataset": "DATA (a dataset name under $TRON_HOME/data/, unless DATA is given)",
    "topk_sampling": "topk (false: 0)",
    "topk_sampling_k": "topk (when topk_sampling is true)",
    "accelerator": "device (gpu: auto, cpu: cpu)",
}


def reference_keys() -> dict[str, str]:
    """The documentation of every reference key: the direct ones, plus those that convert."""
    return {**direct_keys(), **CONVERTED_KEYS}


STRING_OPTIONS = ("sampling_style", "loss", "model", "optimizer", "shuffle", "lr_schedule", "select_on", "objective", "knn_similarity", "blend_select_on")


def _check_type(path: Path, key: str, value: Any, name: str) -> Any:
    """Type-check one value against the option's default type; name the key when it is wrong."""
    default = option_defaults()[name]
    if name in ("batch_negatives", "batch_size_per_device") and value is None:
        return None
    if name == "beta":
        numbers = value if isinstance(value, list) else [value]
        if not (1 <= len(numbers) <= 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and not number_problem(float(v)) for v in numbers)):
            raise UsageError(f"{path}: key {key!r} must be one or two finite numbers, got {value!r}", "Fix the config file")
        return tuple(float(v) for v in numbers)
    if isinstance(default, tuple) and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if name in GRIDS:
        numbers = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and not number_problem(float(v)) for v in numbers):
            raise UsageError(f"{path}: key {key!r} must be a list of finite numbers, got {value!r}", "Fix the config file")
        return tuple(float(v) for v in numbers)
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
    problem = number_problem(value) if expected in (int, float) else None
    if problem:
        raise UsageError(f"{path}: key {key!r} must be {problem}, got {value!r}", "Fix the config file")
    return value


def load_config_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(options by flat name, extras such as the dataset name) from a reference or tron config file."""
    path = Path(path)
    try:
        document = parse(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except (JsonRefused, UnicodeDecodeError) as error:
        raise UsageError(error.at(path) if isinstance(error, JsonRefused) else f"{path}: not UTF-8 text", "Fix the config file") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path}: a config file must hold one JSON object")
    known = option_defaults()
    if str(document.get("schema", "")).startswith("run/"):
        # a run's config.json: its training options and its model's settings
        values = {k: v for k, v in (document.get("model") or {}).items() if k not in ("type", "n_items")}
        values.update(document.get("train") or {})
        for key in values:
            if key not in known:
                raise UsageError(f"{path}: unknown key {key!r} in train", "Remove it, or check the spelling")
        return {key: _check_type(path, key, value, key) for key, value in values.items()}, {}
    options: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    direct = direct_keys()
    spelled: dict[str, str] = {}  # option -> the key that set it: two keys for one option are refused
    for key in document:
        option = direct.get(key, key if key in option_defaults() else None)
        if option is not None and option in spelled:
            raise UsageError(f"{path}: keys {spelled[option]!r} and {key!r} both set {option}", "Keep one of them")
        if option is not None:
            spelled[option] = key
    for key, value in document.items():
        if key in direct:
            name = direct[key]
            if name in STRING_OPTIONS and not isinstance(value, str):
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
        elif key in known:
            options[key] = _check_type(path, key, value, key)
        else:
            raise UsageError(f"{path}: unknown key {key!r}", f"Known keys: {', '.join(sorted(reference_keys()))} (or tron's own option names)")
    if "topk_sampling" in document or "topk_sampling_k" in document:
        enabled = _check_type(path, "topk_sampling", document.get("topk_sampling", False), "mask_hits")
        k = _check_type(path, "topk_sampling_k", document.get("topk_sampling_k", 1000), "topk")
        options["topk"] = k if enabled else 0
    return options, extras


def _multitron_checks(config: TrainConfig, loss: Any) -> list[tuple[bool, str]]:
    """The objective, its loss and the model's preference input agree; beta is a Dirichlet concentration."""
    multi = config.objective == "multitron"
    reads = bool(getattr(config.network, "preference", False))
    two = [name for name, entry in LOSSES.items() if len(entry.objectives) > 1]
    return [
        (config.objective in OBJECTIVES, f"--objective must be one of {', '.join(OBJECTIVES)}"),
        (
            not multi or "preference" in MODELS.get(config.model).settings(),
            f"model {config.model} has no preference input: --objective multitron trains a model that reads one (sasrec)",
        ),
        (not multi or len(loss.objectives) > 1, f"--objective multitron trains a two-objective loss: --loss {' or '.join(two)}"),
        (multi or len(loss.objectives) == 1, f"--loss {config.loss} has two objectives: add --objective multitron"),
        (not multi or reads, "--no-preference: --objective multitron trains a model that reads the preference vector"),
        (multi or not reads, "--preference is set by --objective multitron"),
        (len(config.beta) == 2 and all(math.isfinite(a) and a > 0 for a in config.beta), "--beta must be one or two positive numbers"),
        (not multi or config.logq == 0, "--logq is not defined for MultiTRON's losses"),
    ]


def validate(config: TrainConfig, n_items: int | None = None) -> TrainConfig:
    """Reject inconsistent options with a message naming them (exit 2); the model's config checks its own."""
    loss = LOSSES.get(config.loss, "--loss")
    feeding = MODELS.get(config.model).model_class.feeding
    checks = [
        (config.sampling_style in SAMPLING_STYLES, f"--sampling-style must be one of {', '.join(SAMPLING_STYLES)}"),
        (config.negative_distribution in DISTRIBUTIONS, f"--negative-distribution must be one of {', '.join(DISTRIBUTIONS)}"),
        (config.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
        (config.shuffle in SHUFFLES, f"--shuffle must be one of {', '.join(SHUFFLES)}"),
        (config.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}"),
        (config.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}"),
        (config.batch_size >= 1, "--batch-size must be at least 1"),
        (config.epochs >= 1, "--epochs must be at least 1"),
        (0 <= config.lr < math.inf, f"--lr must be a finite number >= 0, not {config.lr}"),
        (config.uniform_negatives >= 0, "--uniform-negatives must be >= 0"),
        (
            0 <= config.in_batch_negatives < config.batch_size,
            f"--batch-negatives ({config.in_batch_negatives}) must be >= 0 and smaller than --batch-size ({config.batch_size})",
        ),
        (
            not loss.sampled or config.uniform_negatives + config.in_batch_negatives > 0,
            "a sampled loss needs negatives: set --uniform-negatives or --batch-negatives",
        ),
        (config.topk >= 0, "--topk must be >= 0"),
        (
            not loss.sampled or config.topk <= config.uniform_negatives + config.in_batch_negatives,
            f"--topk {config.topk} is larger than the {config.uniform_negatives + config.in_batch_negatives} negatives drawn per event",
        ),
        (0 <= config.alpha < math.inf, "--alpha must be a finite number >= 0"),
        (0 <= config.logq < math.inf, "--logq must be a finite number >= 0"),
        (
            config.logq == 0 or loss.logq,
            f"--logq corrects sampled softmax losses only: use it with --loss {' or '.join(name for name, entry in LOSSES.items() if entry.logq)}",
        ),
        (config.early_stopping >= 0, "--early-stopping must be >= 0"),
        (config.lr_schedule in SCHEDULES, f"--lr-schedule must be one of {', '.join(SCHEDULES)}"),
        (config.warmup_steps >= 0, "--warmup-steps must be >= 0"),
        (all(name in TRACKERS for name in config.track), f"--track must be one of {', '.join(TRACKERS.names())}"),
        (config.bucket_window >= 0, "--bucket-window must be >= 0"),
        (config.bucket_window == 0 or feeding == "windows", f"--bucket-window groups windows of sessions; {config.model} walks sessions click by click"),
        (config.valid_limit > 0, "--valid-limit must be positive"),
        (0 <= config.transition_weight < math.inf, "--transition-weight must be a finite number >= 0"),
        (0 < config.transition_smoothing < math.inf, "--transition-smoothing must be a positive number"),
        (0 <= config.knn_weight < math.inf, "--knn-weight must be a finite number >= 0"),
        (0 <= config.repeat_weight < math.inf, "--repeat-weight must be a finite number >= 0"),
        (config.knn_similarity in KNN_SIMILARITIES, f"--knn-similarity must be one of {', '.join(KNN_SIMILARITIES)}"),
        (all(name in KNN_SIMILARITIES for name in config.knn_similarities), f"--knn-similarities must be among {', '.join(KNN_SIMILARITIES)}"),
        *((all(0 <= value < math.inf for value in getattr(config, name)), f"--{name.replace('_', '-')} must hold finite numbers >= 0") for name in GRIDS),
        (
            not (config.exclude_seen and (config.transition_grid or config.knn_grid or config.knn_similarities or config.repeat_grid)),
            "the blends' grids are chosen with the session's clicks in the ranking: drop --exclude-seen or the grids",
        ),
        (config.overfit_batches >= 0, "--overfit-batches must be >= 0"),
        (
            not config.optimizer.startswith("sparse") or loss.sampled,
            f"--loss {config.loss} updates every item row each step: use a dense optimizer (adam or adagrad)",
        ),
        (
            feeding != "lanes" or config.sampling_style != "eventwise",
            f"{config.model} feeds one event per session per step: use --sampling-style batchwise or sessionwise",
        ),
        (config.batch_size_per_device is None or config.batch_size_per_device >= 1, "--batch-size-per-device must be at least 1"),
        *_multitron_checks(config, loss),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    parse_metric(config.select_on, "--select-on")
    for term in config.blend_select_on.split("+"):
        parse_metric(term.strip(), "--blend-select-on")
    if n_items is not None and loss.sampled and config.negative_distribution == "uniform" and config.reject_uniform_session_items and n_items < 2:
        raise UsageError("rejecting session items needs a catalogue of more than one item")
    return config
