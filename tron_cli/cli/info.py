"""`tron info PATH`: one download, dataset, run, bundle or file in full (its files' schemas, counts, config, metrics)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from tron_cli.cli._ui import UI, human_size, pass_ui, shown, when

SKIPPED = {"files", "manifest", "config", "summary", "history", "metrics", "steps", "document", "same_name"}  # shown in tables of their own


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": "))
    return "-" if value is None else str(value)


def _flat(prefix: str, value: Any) -> list[list[str]]:
    """Rows `section.key | value` of a nested document (`files.0.path` for a list of objects)."""
    if isinstance(value, list) and value and all(isinstance(inner, dict) for inner in value):
        value = dict(enumerate(value))
    if isinstance(value, dict) and value:
        return [row for key, inner in value.items() for row in _flat(f"{prefix}.{key}" if prefix else str(key), inner)]
    return [[prefix, _cell(value)]]


def _file_details(entry: dict[str, Any]) -> str:
    if "error" in entry:
        return f"unreadable: {entry['error']}"
    if "columns" in entry:
        return f"{entry['rows']:,} rows: " + ", ".join(f"{name} {kind}" for name, kind in entry["columns"].items())
    if "tensors" in entry:  # a summary: --json lists every tensor's shape and dtype
        tensors = entry["tensors"].values()
        values = sum(math.prod(t["shape"]) for t in tensors)
        n = len(entry["tensors"])
        return f"{n} tensor{'s' if n != 1 else ''}, {values:,} values ({', '.join(sorted({t['dtype'] for t in tensors}))})"
    return entry.get("schema") or ""


@click.command(short_help="Describe one dataset, run, bundle or download: schema, counts, config, metrics.")
@click.argument("target", metavar="PATH", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, every path absolute.")
@pass_ui
def info(ui: UI, target: Path, as_json: bool) -> None:
    """Describe PATH: a download, dataset, run or bundle dir (or its name under $TRON_HOME), or one file.

    Reads the artifact's JSON documents and the headers of its Parquet and safetensors files (no
    tensor or table is loaded). Prints on stdout what tron ls shows of it, then its files with their
    columns or tensors, and its documents: a dataset's counts and parameters, a run's config, history
    and metrics, a bundle's config. With --json, all of it as one object.

    \b
    Examples:
        tron info data/synthetic
        tron info synthetic-sasrec-1                 # a name under $TRON_HOME/runs/ (or bundles/, data/)
        tron info runs/otto-sasrec-1 --json | jq .summary
        tron info data/otto/test.parquet
    """
    from tron_cli.api.handles import info as describe

    document = describe(target)
    for other in document.get("same_name", []):
        ui.info(f"{target} also names {shown(other)}: tron info {shown(other)}")
    if as_json:
        ui.emit_json(document)
        return
    about = {key: value for key, value in document.items() if key not in SKIPPED}
    about["path"] = shown(about["path"])
    about["size"] = human_size(about["size"])
    if "created" in about:
        about["created"] = f"{when(about['created'])} UTC"
    ui.table(f"{document['kind']} {document['name']}", ["", "value"], _flat("", about), stdout=True, numbers=False)
    for section in ("config", "summary", "metrics", "manifest", "document"):
        if document.get(section):
            ui.table(section, ["", "value"], _flat("", document[section]), stdout=True, numbers=False)
    if document.get("history"):
        columns = ["epoch", "loss", "valid R@20", "valid MRR@20", "seconds"]
        rows = [
            [r.get("epoch"), r.get("loss"), (r.get("valid") or {}).get("recall@20"), (r.get("valid") or {}).get("mrr@20"), r.get("seconds")]
            for r in document["history"]
        ]
        ui.table("history", columns, [[_cell(cell) for cell in row] for row in rows], stdout=True)
    if document.get("files"):
        rows = [[str(Path(f["path"]).relative_to(document["path"])), human_size(f["size"]), _file_details(f)] for f in document["files"]]
        ui.table("files", ["file", "size", "holds"], rows, stdout=True, numbers=False)
