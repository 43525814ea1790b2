"""The pipeline from Python: `download`, `preprocess`, `evaluate` and `export`, each the stage its `tron` command
runs, with the command's options as keywords (`--test-days` is `test_days`), the same checks and the same
one-line errors (`tron_cli.errors`). `train` is in `training.py`, `load` in `recommender.py`.

Each function returns a handle on what it wrote (`handles.py`) or the metrics it computed (`metrics.py`), and
imports the stage (and torch) only when it runs. Progress and messages go to `reporter` (default: progress bars in
a terminal or a notebook, messages to the `tron_cli` logger, warnings as `TronWarning`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tron_cli.api.handles import Bundle, Dataset, Download, PathLike
from tron_cli.api.metrics import Metrics
from tron_cli.choices import CART_NAMES, ORDER_NAMES
from tron_cli.errors import OptionError

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl
    import pyarrow as pa

    from tron_cli.reporting import Reporter


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


def names(value: str | Sequence[str]) -> tuple[str, ...]:
    """A list of names: a sequence, or one comma-separated string (as the CLI's flags take them)."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    return tuple(name.strip() for name in parts if name.strip())


def pairs(value: Mapping[str, Any] | Sequence[str] | str) -> tuple[str, ...]:
    """NAME=VALUE parameters (--index-param) from a mapping, NAME=VALUE strings, or one such string."""
    if isinstance(value, Mapping):
        return tuple(f"{name}={setting}" for name, setting in value.items())
    return (value,) if isinstance(value, str) else tuple(value)


def download(
    name: str,
    *,
    out: PathLike | None = None,
    force: bool = False,
    url: str | None = None,
    sha256: str | None = None,
    from_path: PathLike | None = None,
    reporter: Reporter | None = None,
    **parameters: int,
) -> Download:
    """Download a registered dataset, or generate a synthetic one (`tron download NAME`).

    `parameters` are a generated dataset's own (synthetic: `sessions`, `items`, `seed`, `days`, `churn`); `from_path` is the CLI's
    --from (a file downloaded by hand). A complete download is left as it is unless `force` (`Download.skipped`)."""
    from tron_cli.api.progress import reporter_or_default
    from tron_cli.stages.download import download_dataset

    result = download_dataset(
        name, _path(out), url=url, from_path=_path(from_path), sha256=sha256, force=force, parameters=dict(parameters), report=reporter_or_default(reporter)
    )
    handle = Download(result.path)
    handle.skipped = result.skipped
    return handle


def preprocess(
    train: PathLike | pl.DataFrame | pd.DataFrame | pa.Table | Download | None = None,
    test: PathLike | pl.DataFrame | pd.DataFrame | pa.Table | None = None,
    *,
    download: str | Download | None = None,
    name: str | None = None,
    input: PathLike | None = None,
    format: str = "auto",
    session_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    time_unit: str = "auto",
    id_type: str = "auto",
    separator: str | None = None,
    event_types: str | Sequence[str] = "clicks",
    type_col: str | None = None,
    order_types: str | Sequence[str] = ORDER_NAMES,
    cart_types: str | Sequence[str] = CART_NAMES,
    out: PathLike | None = None,
    force: bool = False,
    split: str = "time",
    test_days: float | None = None,
    valid_days: float | None = None,
    valid_fraction: float | None = None,
    no_valid: bool = False,
    min_session_length: int = 2,
    min_item_support: int | None = None,
    unknown_test_items: str | None = None,
    memory_limit: str = "auto",
    catalogue_from: PathLike | None = None,
    reporter: Reporter | None = None,
) -> Dataset:
    """Turn a click log into a dataset: sessions, splits and a dense item catalogue (`tron preprocess`).

    `train` is your log: a file (CSV, TSV, Parquet, JSON lines, each maybe .gz/.zst), a directory of such parts, a
    glob or a hive-partitioned tree, or a polars, pandas or pyarrow table, of one event a row, its session, item and
    time columns recognised by name or given by `session_col`, `item_col` and `time_col` (a table's dataset is named
    "table" unless `name` says); `test` a test log of your own.
    A `Download` (or `download`, a registered dataset's name, with `input` to read other files) preprocesses that
    download as the reference does; nothing at all preprocesses the newest download. The other keywords are
    `tron preprocess`'s flags (`tron preprocess --help`)."""
    from tron_cli.api.progress import reporter_or_default
    from tron_cli.api.tables import is_table, to_polars
    from tron_cli.stages.preprocess import Options
    from tron_cli.stages.preprocess import preprocess as run
    from tron_cli.workspace import home

    if isinstance(train, Download):
        if download is not None:
            raise OptionError("give the download once: as the log or as download=")
        train, download = None, train
    preset: str | None
    if isinstance(download, Download):
        preset = str(download.manifest.get("name", download.name))
        if input is None and download.path != (home.raw_root() / preset).resolve():  # where `tron preprocess NAME` would not look
            input = download.path
    else:
        preset = download
    logs = [to_polars(log, what) if is_table(log) else _path(cast("PathLike | None", log)) for log, what in ((train, "train"), (test, "test"))]
    options = Options(
        preset=preset,
        input=_path(input),
        train=logs[0],
        test=logs[1],
        format=format,
        session_col=session_col,
        item_col=item_col,
        time_col=time_col,
        time_unit=time_unit,
        id_type=id_type,
        separator=separator,
        event_types=names(event_types),
        type_col=type_col,
        order_types=names(order_types),
        cart_types=names(cart_types),
        name=name,
        out=_path(out),
        force=force,
        split=split,
        test_days=test_days,
        valid_days=valid_days,
        valid_fraction=valid_fraction,
        no_valid=no_valid,
        min_session_length=min_session_length,
        min_item_support=min_item_support,
        unknown_test_items=unknown_test_items,
        memory_limit=memory_limit,
        catalogue_from=_path(catalogue_from),
    )
    summary = run(options, report=reporter_or_default(reporter))
    return Dataset(summary["dataset"])


def evaluate(
    run: PathLike | None = None,
    *,
    split: str = "test",
    data: PathLike | None = None,
    cutoff: int | Sequence[int] = (5, 10, 20),
    ties: str = "pessimistic",
    protocol: str = "all",
    cut_seed: int = 42,
    exclude_seen: bool | None = None,
    baseline: str | None = None,
    baseline_option: Mapping[str, Any] | Sequence[str] = (),
    bootstrap: int = 0,
    seed: int = 0,
    device: str = "auto",
    chunk_size: int = 65536,
    track: str | Sequence[str] = (),
    retrieval: str = "exact",
    index_param: Mapping[str, int] | Sequence[str] = (),
    order_weight: float | None = None,
    transition_weight: float | None = None,
    reporter: Reporter | None = None,
) -> Metrics:
    """Rank the whole catalogue for every target of a split and measure Recall, MRR and NDCG at each `cutoff`
    (`tron evaluate`).

    `run` is a run or a bundle (or its name; default: the newest finished run), or None with `baseline`
    ("popular", "markov", "sknn", "vsknn", with `baseline_option` {name: value}). A run's metrics are also written
    to its metrics.json. `exclude_seen` None is the dataset's own protocol (on for leave-one-out data). The other
    keywords are `tron evaluate`'s flags (`tron evaluate --help`)."""
    from tron_cli.api.progress import reporter_or_default
    from tron_cli.evaluation.procedures import EvalOptions
    from tron_cli.stages.evaluate import evaluate as run_evaluation
    from tron_cli.workspace import home

    if baseline is not None and run is not None:
        raise OptionError("give either RUN or --baseline, not both")
    parsed = baseline_options(baseline, baseline_option)
    model = None if baseline is not None else home.resolve_run(_path(run))
    cutoffs = (cutoff,) if isinstance(cutoff, int) else tuple(cutoff)
    options = EvalOptions(
        split=split,
        cutoffs=tuple(sorted(set(cutoffs))),
        ties=ties,
        protocol=protocol,
        exclude_seen=exclude_seen,
        bootstrap=bootstrap,
        seed=seed,
        chunk_size=chunk_size,
        cut_seed=cut_seed,
    )
    result = run_evaluation(
        model,
        _path(data),
        options,
        baseline=baseline,
        device=device,
        report=reporter_or_default(reporter),
        baseline_options=parsed,
        track=names(track),
        retrieval=retrieval,
        index_params=pairs(index_param),
        order_weight=order_weight,
        transition_weight=transition_weight,
    )
    return Metrics(result, model)


def baseline_options(baseline: str | None, given: Mapping[str, Any] | Sequence[str]) -> dict[str, Any]:
    """A baseline's options from a mapping, or NAME=VALUE strings typed as the baseline declares each option."""
    if not given:
        return {}
    if baseline is None:
        raise OptionError("--baseline-option needs --baseline")
    if isinstance(given, Mapping):
        return dict(given)
    from tron_cli.evaluation.baselines import BASELINES

    declared = {option.name: option for option in BASELINES.get(baseline, "--baseline").options}
    out: dict[str, Any] = {}
    for pair in (given,) if isinstance(given, str) else given:
        name, equals, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not equals or not name:
            raise OptionError(f"--baseline-option {pair!r} is not NAME=VALUE")
        kind = type(declared[name].default) if name in declared else str
        try:
            out[name] = kind(value) if kind is not bool else value.lower() in ("1", "true", "yes")
        except ValueError:
            raise OptionError(f"--baseline-option {name} takes a {kind.__name__}, not {value!r}") from None
    return out


def export(
    run: PathLike | None = None,
    *,
    out: PathLike | None = None,
    format: str = "safetensors",
    index: str | None = None,
    index_param: Mapping[str, int] | Sequence[str] = (),
    force: bool = False,
    reporter: Reporter | None = None,
) -> Bundle:
    """Package a finished run as a bundle that `tron_cli.load` (or `tron recommend`, `tron serve`) loads on its own
    (`tron export`): its selected weights, catalogue and config; `format="onnx"` adds model.onnx, `index` an item
    index ("hnsw", "ivf", "exact"; the serve extra). `run` defaults to the newest finished run."""
    from tron_cli.api.progress import reporter_or_default
    from tron_cli.stages.export import IndexRequest
    from tron_cli.stages.export import export as run_export

    params = pairs(index_param)
    if params and index is None:
        raise OptionError("--index-param needs --index KIND")
    request = IndexRequest(index, params) if index else None
    result = run_export(_path(run), _path(out), format, force, report=reporter_or_default(reporter), index=request)
    return Bundle(result["bundle"])
