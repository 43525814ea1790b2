"""`tron_cli.train`: `tron train` from Python, its options by their flag names as keywords (`train_options.py`,
generated from the same declarations as the flags), merged as the CLI merges them: the preset's, then the config
file's, then the keywords. Ctrl-C (in a terminal or a notebook) stops at the next step, saves a checkpoint and
raises `tron_cli.errors.Interrupted`; `train(resume=run)` continues it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tron_cli.api.handles import PathLike, Run
from tron_cli.errors import OptionError, UsageError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tron_cli.api.train_options import TrainOptions
    from tron_cli.reporting import Reporter


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def merged_options(preset: str | None, config: PathLike | None, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(option values, extras of the config file such as its dataset): the preset's, then the config file's (values
    of None or empty lists there mean "not set"), then `options`; --shuffle's reference spellings normalised."""
    from tron_cli.training.config import PRESETS, SHUFFLE_ALIASES, load_config_file

    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise OptionError(f"unknown preset {preset!r}", f"Use one of: {', '.join(PRESETS)}")
        values.update(PRESETS[preset].options)
    extras: dict[str, Any] = {}
    if config is not None:
        from_file, extras = load_config_file(Path(config))
        values.update({name: value for name, value in from_file.items() if value is not None and value != ()})
    values.update(options)
    if values.get("batch_negatives") == "auto":
        values["batch_negatives"] = None
    if isinstance(values.get("track"), str):
        values["track"] = (values["track"],)
    if isinstance(values.get("beta"), (int, float)):
        values["beta"] = (values["beta"],)
    if "shuffle" in values:
        values["shuffle"] = SHUFFLE_ALIASES.get(values["shuffle"], values["shuffle"])
    return values, extras


def _dataset_evaluation(data: Path | None, values: dict[str, Any]) -> dict[str, Any]:
    """{select_on, exclude_seen} of the dataset a new run trains on (leave-one-out data: NDCG@10 without seen
    items), or nothing when there is no readable dataset yet (the train stage says so itself). Blend grids rank
    with the session's clicks, so with one set the dataset's `exclude_seen` gives way."""
    from tron_cli.artifacts.sessions import read_dataset
    from tron_cli.errors import TronError
    from tron_cli.training.config import GRIDS
    from tron_cli.workspace import home

    try:
        protocol = read_dataset(data if data is not None else home.latest_dataset()).evaluation
    except TronError:
        return {}
    if any(values.get(name) for name in (*GRIDS, "knn_similarities")):
        protocol.pop("exclude_seen")
    return protocol


def train(
    dataset: PathLike | None = None,
    *,
    preset: str | None = None,
    config: PathLike | None = None,
    out: PathLike | None = None,
    resume: PathLike | None = None,
    init_from: PathLike | None = None,
    force: bool = False,
    devices: int = 1,
    reporter: Reporter | None = None,
    **options: Unpack[TrainOptions],
) -> Run:
    """Train TRON (SASRec with shared negatives, top-k and sampled softmax) or a baseline on a dataset (`tron train`).

    `dataset` is a dataset (a `Dataset`, its path or name; default: the one a `config` file names, else the newest
    under $TRON_HOME/data/). `preset` ("small": a CPU-sized TRON; "xl", "reference") and `config` (a reference TRON
    config or a run's config.json) set options beneath the keywords, which are `tron train`'s flags
    (`hidden_size=64`, `epochs=3`; `tron train --help` lists them); `select_on` and `exclude_seen` not set anywhere
    are the dataset's own protocol (leave-one-out data: NDCG@10 without seen items). Writes a run dir (`out`, default
    $TRON_HOME/runs/DATASET-MODEL-N); `resume` continues an interrupted run (only epochs, device, precision and a
    few others may change); `init_from` warm-starts from a run or bundle whose catalogue the dataset's grew from
    (`preprocess(catalogue_from=...)`). Returns the run, its `summary` what `tron train --json` prints."""
    from tron_cli.api.progress import reporter_or_default
    from tron_cli.losses import LOSSES, all_options
    from tron_cli.safe_json import parse
    from tron_cli.stages.train import TrainRequest
    from tron_cli.stages.train import train as run_training
    from tron_cli.training.config import MULTITRON_LOSS, PRESET_MODEL, TrainConfig, validate
    from tron_cli.workspace import home

    given = dict(options)
    values, extras = merged_options(preset, config, given)
    data = None if dataset is None else Path(dataset)
    if data is None and "dataset" in extras and resume is None:
        data = home.datasets_root() / extras["dataset"]
    if resume is not None and (data is not None or out is not None):
        raise OptionError("--resume continues a run with its own dataset and dir: drop DATA and --out")
    if resume is None:  # the dataset's own validation protocol, beneath the keywords, the preset and the config file
        for name, value in _dataset_evaluation(data, values).items():
            values.setdefault(name, value)
    loss = values.get("loss", MULTITRON_LOSS if values.get("objective") == "multitron" else TrainConfig.loss)
    for name in sorted(set(given) & set(all_options())):
        if loss in LOSSES and name not in {option.name for option in LOSSES.get(loss).options}:
            raise OptionError(f"{_flag(name)} applies to --loss {', '.join(all_options()[name][1])}, not {loss}")
    model = values.get("model", TrainConfig.model)
    if preset is not None and model != PRESET_MODEL:
        raise OptionError(f"--preset {preset} configures {PRESET_MODEL}, not {model}: give {model}'s settings as flags")
    try:
        train_config = validate(TrainConfig.create(**values))
    except UsageError as error:
        raise OptionError(error.message, error.hint) from None
    reference = parse(Path(config).read_text()) if config is not None else None  # checked by load_config_file
    request = TrainRequest(
        train_config,
        data,
        out=None if out is None else Path(out),
        resume=None if resume is None else Path(resume),
        force=force,
        reference_config=reference,
        overrides=tuple(sorted(given)),
        devices=devices,
        init_from=None if init_from is None else Path(init_from),
    )
    summary = run_training(request, report=reporter_or_default(reporter))
    return Run(Path(resume) if resume is not None else summary["run"])
