"""The export stage: a finished run in, a self-contained bundle out (what `tron recommend` and a server need).

A bundle (`$TRON_HOME/bundles/NAME/`, schema bundle/1) holds `model.safetensors` (the run's selected
weights, byte for byte), `items.parquet` (the dataset's catalogue: dense id <-> raw id, train clicks),
`config.json` (the model section, max_length, catalogue fingerprint, where it came from) and, with
`--format onnx`, `model.onnx`: a graph from left-padded sessions to their top-k items, checked against
PyTorch with onnxruntime before the bundle is written, and, with `--index KIND`, `index.faiss`: an item index
(`inference/index.py`) that `tron recommend`, `tron evaluate --retrieval index` and `tron serve` search instead of
scoring the whole catalogue. config.json records every other file's sha256, which loading checks. The
directory is built under a temporary name and renamed when complete, so a killed export leaves nothing that
looks like a bundle.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tron_cli.artifacts.documents import read_json, write_json
from tron_cli.artifacts.files import atomic_directory, check_replaceable, sha256_file
from tron_cli.artifacts.sessions import read_dataset
from tron_cli.choices import EXPORT_FORMATS
from tron_cli.errors import ArtifactError, MissingInputError, TronError, UsageError
from tron_cli.inference.index import INDEX_FILE, INDEXES, build_index, parse_params, require_faiss, write_index
from tron_cli.inference.scorer import Scorer, read_blends
from tron_cli.inference.scoring import score_sessions
from tron_cli.memory import available_bytes, refuse_beyond
from tron_cli.modelio import check_weights, load_weights, model_of, read_model_dir
from tron_cli.models import build_model
from tron_cli.models.base import SessionModel
from tron_cli.reporting import SILENT, Reporter
from tron_cli.workspace import home

OPSET = 18
ONNX_LIMIT = 2 * 1024**3  # protobuf's limit: larger weights go to an external data file
TOLERANCE = 1e-4  # scores of onnxruntime and PyTorch may differ by this much (fp32, other kernels)


# ------------------------------------------------------------------------------------------------ the ONNX graph


class TopKGraph(nn.Module):
    """items (B, T) int64 left-padded (0 = padding), k int64 scalar -> indices (B, k) int64 dense ids (never 0)
    and scores (B, k) float32, best first: the model's state after each session's last click against items
    1..N (+ bias), then top-k. A model with a preference input (MultiTRON) also takes preference (B, 2)
    float32, each row's [click weight, order weight], after k."""

    def __init__(self, model: SessionModel):
        super().__init__()
        self.model = model

    def forward(self, items: Tensor, k: Tensor, preference: Tensor | None = None) -> tuple[Tensor, Tensor]:
        model: Any = self.model  # a model with a preference input takes it as last_hidden's second argument
        hidden = model.last_hidden(items) if preference is None else model.last_hidden(items, preference)
        scores = hidden @ self.model.output_table()[1:].T
        if self.model.output_bias is not None:
            scores = scores + self.model.output_bias[1:, 0]
        values, index = torch.topk(scores, k)  # type: ignore[arg-type]  # a tensor k keeps the graph's k dynamic
        return index + 1, values


@contextlib.contextmanager
def _quiet_exporter():
    """The exporters print progress and warnings of their own: none of it may reach stdout or the user."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _example(model: SessionModel, max_length: int) -> tuple[Tensor, ...]:
    """Example inputs (items, k[, preference]) of the graph."""
    # 3 x 2+ so that torch.export keeps both sizes symbolic (it specialises sizes 0 and 1)
    t = min(max_length, 8) if max_length > 1 else 1
    items = torch.randint(1, model.n_items + 1, (3, t), generator=torch.Generator().manual_seed(0))
    items[0, : t // 2] = 0
    k = torch.tensor(min(20, model.n_items))
    return (items, k, _preferences(3, 0)) if model.preference_input else (items, k)


def _preferences(batch: int, seed: int) -> Tensor:
    """(batch, 2) random preference vectors [1 - w, w]."""
    weight = torch.rand(batch, 1, generator=torch.Generator().manual_seed(seed))
    return torch.cat([1 - weight, weight], 1)


def input_names(model: SessionModel) -> list[str]:
    return ["items", "k", "preference"] if model.preference_input else ["items", "k"]


def _export_dynamo(graph: TopKGraph, path: Path, max_length: int, external: bool) -> None:
    example = _example(graph.model, max_length)
    items = example[0]
    length = None
    if items.shape[1] > 1:
        # learned positions (SASRec) stop at max_length; a recurrent model reads sessions of any length
        length = torch.export.Dim("length", min=1, max=max_length) if graph.model.bounded_length else torch.export.Dim("length", min=1)
    batch = torch.export.Dim("batch", min=1)
    shapes: tuple[Any, ...] = ({0: batch, **({1: length} if length is not None else {})}, None, *([{0: batch}] if len(example) == 3 else []))
    program = torch.onnx.export(
        graph,
        example,
        None,
        input_names=input_names(graph.model),
        output_names=["indices", "scores"],
        dynamo=True,
        dynamic_shapes=shapes,
        opset_version=OPSET,
        verbose=False,
    )
    if program is None:  # the dynamo exporter returns the program when no file is given
        raise TronError("the ONNX exporter returned no program")
    program.save(str(path), external_data=external)


def _export_torchscript(graph: TopKGraph, path: Path, max_length: int) -> None:
    example = _example(graph.model, max_length)
    axes = {"items": {0: "batch", 1: "length"}, "preference": {0: "batch"}, "indices": {0: "batch", 1: "k"}, "scores": {0: "batch", 1: "k"}}
    names = input_names(graph.model)
    torch.onnx.export(
        graph,
        example,
        str(path),
        input_names=names,
        output_names=["indices", "scores"],
        dynamo=False,
        dynamic_axes={name: value for name, value in axes.items() if name in names or name in ("indices", "scores")},
        opset_version=OPSET,
    )


def random_sessions(n_items: int, batch: int, width: int, seed: int) -> Tensor:
    """(batch, width) left-padded sessions of random items and random lengths 1..width."""
    generator = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (batch, width), generator=generator)
    lengths = torch.randint(1, width + 1, (batch,), generator=generator)
    return torch.where(torch.arange(width)[None, :] >= (width - lengths)[:, None], items, 0)


def same_top_k(expected_ids: np.ndarray, expected_scores: np.ndarray, ids: np.ndarray, scores: np.ndarray, tolerance: float = TOLERANCE) -> bool:
    """Whether two top-k lists agree: scores within `tolerance`, and ids wherever the expected score is not
    within `tolerance` of a neighbour (near-ties may come in either order). `expected_*` hold k + 1 columns,
    so that a tie between the k-th and the next item is known."""
    k = ids.shape[1]
    if not np.allclose(scores, expected_scores[:, :k], rtol=1e-5, atol=tolerance):
        return False
    close = np.abs(np.diff(expected_scores, axis=1)) <= tolerance  # column j ties with column j + 1
    tied = np.zeros(expected_scores.shape, dtype=bool)
    tied[:, :-1] |= close
    tied[:, 1:] |= close
    return bool(np.all((ids == expected_ids[:, :k]) | tied[:, :k]))


def verify_onnx(path: Path, model: SessionModel, max_length: int) -> None:
    """Refuse a graph whose top-k differs from `tron recommend`'s on random sessions (B = 1 and 7, several T)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    k = min(20, model.n_items)
    for seed, (batch, width) in enumerate([(1, max_length), (7, max(1, min(max_length, 5))), (7, max_length)]):
        items = random_sessions(model.n_items, batch, width, seed)
        preference = _preferences(batch, seed) if model.preference_input else None
        feed = {"items": items.numpy(), "k": np.array(k, dtype=np.int64), **({} if preference is None else {"preference": preference.numpy()})}
        ids, scores = session.run(["indices", "scores"], feed)
        expected_scores, expected_ids = score_sessions(Scorer(model), items, min(k + 1, model.n_items), preference=preference)
        if ids.shape != (batch, k) or not same_top_k(expected_ids.numpy(), expected_scores.numpy(), ids, scores):
            raise TronError(
                f"the ONNX graph's top-{k} differs from PyTorch's on {batch} random sessions of {width} clicks (largest score difference {np.abs(scores - expected_scores.numpy()[:, :k]).max():.2g})",
                "Nothing was written; export --format safetensors and serve with tron recommend",
            )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def export_onnx(model: SessionModel, path: Path, max_length: int, report: Reporter = SILENT) -> dict[str, Any]:
    """Write and verify `path`; the dynamo exporter first, the TorchScript one if that fails."""
    graph = TopKGraph(model).eval()
    external = sum(p.numel() * p.element_size() for p in model.parameters()) > ONNX_LIMIT
    exporter = "dynamo"
    with torch.no_grad(), _quiet_exporter():
        try:
            _export_dynamo(graph, path, max_length, external)
        except Exception as error:  # the exporter fails in many ways (unsupported op, tracing, translation)
            report.detail(f"the dynamo ONNX exporter failed ({_first_line(error)}); trying the TorchScript exporter")
            for stale in path.parent.glob(f"{path.name}*"):
                stale.unlink()
            exporter = "torchscript"
            try:
                _export_torchscript(graph, path, max_length)
            except Exception as second:
                raise TronError(
                    f"ONNX export failed with both exporters ({_first_line(second)})", "Export --format safetensors and serve with tron recommend"
                ) from None
    with torch.no_grad():
        verify_onnx(path, model, max_length)
    return {
        "file": path.name,
        "exporter": exporter,
        "opset": OPSET,
        "inputs": {
            "items": "int64 [batch, length] left-padded dense ids, 0 = padding",
            "k": "int64 scalar, 1..n_items",
            **({"preference": "float32 [batch, 2] [click weight, order weight] of each row, summing to 1"} if model.preference_input else {}),
        },
        "outputs": {"indices": "int64 [batch, k] dense ids 1..n_items, best first", "scores": "float32 [batch, k]"},
    }


# ------------------------------------------------------------------------------------------------ the stage


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise TronError("--format onnx needs onnx, onnxscript and onnxruntime", "pip install 'tron-cli[onnx]'") from None


@dataclass(frozen=True)
class IndexRequest:
    """An item index to build into the bundle: its kind (`index.INDEXES`) and NAME=VALUE parameters."""

    kind: str
    params: tuple[str, ...] = ()
    seed: int = 0


def write_item_index(model: SessionModel, request: IndexRequest, path: Path, report: Reporter = SILENT) -> dict[str, Any]:
    """Write the model's item index to `path`; returns its config.json section."""
    spec = INDEXES.get(request.kind, "--index")
    build = parse_params(request.params, {**spec.build, **spec.search}, request.kind, "--index-param")
    search = {name: value for name, value in build.items() if name in spec.search}
    if any(value < 1 for value in search.values()):
        raise UsageError("--index-param: search parameters must be at least 1")
    # the points (d + 1 floats an item) are copied twice, into numpy and into faiss, plus up to 2 m links of HNSW
    links = 8 * build.get("m", 0)
    refuse_beyond(
        f"--index {request.kind} over {model.n_items:,} items of d {model.output_size}",
        needed=model.n_items * (8 * (model.output_size + 1) + links),
        available=available_bytes(),
        hint="Export without --index (recommend and serve then score exactly)",
    )
    table = model.output_table()[1:].detach().float().cpu().numpy()
    bias = None if model.output_bias is None else model.output_bias[1:, 0].detach().float().cpu().numpy()
    with report.task(f"building the {request.kind} index of {model.n_items:,} items"):
        index, section = build_index(
            table, bias, kind=request.kind, given={n: v for n, v in build.items() if n in spec.build}, search=search, seed=request.seed
        )
        write_index(index, path)
    report.detail(f"{request.kind} index built in {section['build_seconds']:.1f} s")
    return section


def write_bundle(
    out: Path,
    model: SessionModel,
    weights: Path,
    items: Path,
    fields: dict[str, Any],
    fmt: str = "safetensors",
    index: IndexRequest | None = None,
    force: bool = False,
    report: Reporter = SILENT,
    blend_files: tuple[Path, ...] = (),
) -> list[str]:
    """Build the bundle `out` atomically: `weights`, `items` and the files of the scorer's blends copied,
    model.onnx and the item index when asked for, config.json (`fields` plus onnx, index and every file's
    sha256) last. Returns the file names."""
    with atomic_directory(out, force) as tmp:
        shutil.copyfile(weights, tmp / "model.safetensors")
        shutil.copyfile(items, tmp / "items.parquet")
        for blend_file in blend_files:
            shutil.copyfile(blend_file, tmp / blend_file.name)
        graph = None
        if fmt == "onnx":
            with report.task("exporting to ONNX and checking it with onnxruntime"):
                graph = export_onnx(model, tmp / "model.onnx", model.max_length, report)
        section = write_item_index(model, index, tmp / INDEX_FILE, report) if index is not None else None
        write_json(
            tmp / "config.json",
            {
                "name": out.name,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                **fields,
                "onnx": graph,
                "index": section,
                "sha256": {name: sha256_file(tmp / name) for name in sorted(p.name for p in tmp.iterdir())},
            },
            kind="bundle",
        )
        return sorted(p.name for p in tmp.iterdir())


def export(
    run: Path | None,
    out: Path | None = None,
    fmt: str = "safetensors",
    force: bool = False,
    report: Reporter = SILENT,
    index: IndexRequest | None = None,
) -> dict[str, Any]:
    """Run the stage: returns {"bundle": path, "files": [...], "format": fmt} (and "index": kind with an index)."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown format {fmt!r}", f"Use one of: {', '.join(EXPORT_FORMATS)}")
    if index is not None:
        INDEXES.get(index.kind, "--index")
        require_faiss()
    run = home.resolve_run(run)
    if not run.is_dir():
        raise MissingInputError(f"run {run} does not exist", "Give a run dir made by tron train")
    document, kind = read_model_dir(run)
    if kind == "bundle":
        raise UsageError(f"{run} is a bundle already", "Export a run dir made by tron train")
    if not (run / "summary.json").is_file():
        raise ArtifactError(f"run {run} is not finished (no summary.json)", f"Resume it with tron train --resume {run}, then export it")
    summary = read_json(run / "summary.json", "summary")
    out = Path(out) if out else home.bundles_root() / document.get("name", run.name)
    if out.exists() and not force:
        raise UsageError(f"{out} exists already", "Pass --force to replace it, or --out DIR")
    check_replaceable(out, "bundle", inputs=(run, Path(document.get("dataset", {}).get("path") or run)))
    if fmt == "onnx":
        _require_onnx()
    trained = document.get("dataset", {})
    data = Path(trained.get("path", ""))
    if not (data / "dataset.json").is_file():
        raise MissingInputError(
            f"the dataset of {run} is not at {data}", "The bundle needs its items.parquet: restore the dataset (tron preprocess) and export again"
        )
    dataset = read_dataset(data)
    if dataset.info.get("catalogue_sha256") != trained.get("catalogue_sha256"):
        raise ArtifactError(f"the dataset of {run} changed since it was trained ({data})", "Re-run tron preprocess as it was, or train again")
    dataset.items()  # the catalogue reads and has n_items rows
    section = model_of(document)
    check_weights(run / "model.safetensors", "run", section, trained.get("catalogue_sha256"))  # before the network takes memory
    model = build_model(section)
    load_weights(model, run / "model.safetensors", "run")  # names, shapes, dtypes checked; a bad file is named as it is
    model.eval()
    scorer = Scorer(model, read_blends(run, document, kind, dataset.n_items))  # a damaged blend file is named now, not when served
    if scorer.blends and fmt == "onnx":
        raise UsageError(
            f"{run} scores with blends ({', '.join(f'{b.kind} {b.weight:g}' for b in scorer.blends)}), which the ONNX graph (the network alone) cannot hold",
            "Export --format safetensors (tron recommend and tron serve apply the blends)",
        )
    fields = {
        "model": section,
        "max_length": model.max_length,
        "n_items": dataset.n_items,
        "catalogue_sha256": dataset.info.get("catalogue_sha256"),
        "item_id_type": dataset.info.get("item_id_type"),
        "event_types": dataset.info.get("parameters", {}).get("event_types", ["clicks"]),
        "dataset": dataset.name,
        "scorer": scorer.section(),
        "run": {
            "path": str(run.resolve()),
            "name": document.get("name", run.name),
            "best_epoch": summary.get("best_epoch"),
            "valid": summary.get("valid"),
        },
    }
    files = write_bundle(
        out,
        model,
        weights=run / "model.safetensors",
        items=data / "items.parquet",
        fields=fields,
        fmt=fmt,
        index=index,
        force=force,
        report=report,
        blend_files=tuple(run / str(section["file"]) for section in scorer.section()["blends"] if "file" in section),
    )
    report.info(f"Exported {run} to {out} ({', '.join(files)}).")
    return {"bundle": str(out.resolve()), "files": files, "format": fmt, **({"index": index.kind} if index is not None else {})}
