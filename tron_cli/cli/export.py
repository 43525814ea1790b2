"""`tron export`: a finished run in, a bundle (weights, catalogue, config, optionally ONNX) out."""

from __future__ import annotations

from pathlib import Path

import click

from tron_cli.choices import EXPORT_FORMATS
from tron_cli.cli._params import RegistryChoice
from tron_cli.cli._ui import UI, pass_ui


@click.command()
@click.argument("run", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Bundle dir (default: $TRON_HOME/bundles/RUN_NAME).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    default="safetensors",
    show_default=True,
    help="onnx also writes model.onnx (needs the onnx extra), checked against PyTorch.",
)
@click.option(
    "--index",
    "index_kind",
    type=RegistryChoice("tron_cli.inference.index:INDEXES"),
    help="Also build an item index (index.faiss, needs the serve extra) that recommend, evaluate and serve search instead of the whole catalogue.",
)
@click.option(
    "--index-param",
    "index_params",
    multiple=True,
    metavar="NAME=VALUE",
    help="An index parameter: m, ef_construction, ef_search (hnsw); nlist, nprobe (ivf). Repeatable.",
)
@click.option("--force", is_flag=True, help="Replace an existing bundle.")
@click.option("--json", "as_json", is_flag=True, help='Print {"bundle": PATH, "files": [...], "format": ...} (and "index": KIND) on stdout.')
@pass_ui
def export(ui: UI, run: Path | None, out: Path | None, fmt: str, index_kind: str | None, index_params: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Package a finished run as a bundle that tron recommend (or a server) can load on its own.

    Reads RUN (a run dir, or its name under $TRON_HOME/runs/; default: the newest finished run) and
    the items.parquet of its dataset. Writes the bundle dir: model.safetensors (the run's selected
    weights), items.parquet (raw <-> dense item ids and train clicks), config.json (schema bundle/1)
    and, with --format onnx, model.onnx: inputs items int64 [batch, length] (left-padded, 0 = padding)
    and k, outputs indices int64 [batch, k] (dense ids) and scores float32 [batch, k]. The graph is
    checked against PyTorch with onnxruntime before anything is written. --index adds index.faiss, a
    faiss index of the output item vectors (bias folded in) that answers maximum-inner-product
    queries; its parameters go to config.json, which records every file's sha256. The bundle appears
    only when complete.

    \b
    Examples:
        tron export                                  # the newest run -> bundles/NAME
        tron export runs/otto-sasrec-1 --format onnx
        tron export runs/otto-sasrec-1 --out /srv/models/otto --force --json
        tron export --index hnsw --index-param ef_search=256
    """
    from tron_cli.api.pipeline import export as run_export
    from tron_cli.errors import OptionError

    try:
        bundle = run_export(run, out=out, format=fmt, index=index_kind, index_param=index_params, force=force, reporter=ui)
    except OptionError as error:
        raise click.UsageError(error.line()) from None
    if as_json:
        ui.emit_json(bundle.summary)
