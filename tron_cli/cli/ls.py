"""`tron ls`: the downloads, datasets, runs and bundles under $TRON_HOME, one table per kind."""

from __future__ import annotations

from typing import Any

import click

from tron_cli.cli._ui import UI, human_size, pass_ui, shown, when

KIND_CHOICES = ("downloads", "datasets", "runs", "bundles")


def _recall(value: Any, label: str | None = None) -> str:
    """A Recall@20 for the table, with how it was measured when that is not the default ("- (stale: ...)" too)."""
    shown_value = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
    return f"{shown_value} ({label})" if label else shown_value


def _sessions(counts: Any) -> str:
    return " / ".join(f"{n:,}" if isinstance(n, int) else "-" for n in counts.values()) if isinstance(counts, dict) else "-"


# kind -> (table columns after name/created/size, the cells of one artifact's figures)
COLUMNS: dict[str, tuple[list[str], Any]] = {
    "download": (["source", "files"], lambda a: [a.figures["source"] or "-", a.figures["files"]]),
    "dataset": (
        ["items", "train/valid/test sessions", "targets"],
        lambda a: [
            a.figures["items"],
            _sessions(a.figures["sessions"]),
            a.figures["targets"],
        ],
    ),
    "run": (
        ["model", "dataset", "epochs", "best valid R@20", "test R@20", "status"],
        lambda a: [
            f"{a.figures['model']} ({a.figures['loss']})" if a.figures["model"] else "-",
            a.figures["dataset"],
            f"{a.figures['epochs']}/{a.figures['epochs_asked']}",
            _recall(a.figures["valid_recall@20"]),
            _recall(a.figures["test_recall@20"], a.figures["test_recall@20_measured"]),
            a.status,
        ],
    ),
    "bundle": (
        ["model", "dataset", "items", "valid R@20", "run"],
        lambda a: [a.figures["model"], a.figures["dataset"], a.figures["items"], _recall(a.figures["valid_recall@20"]), a.figures["run"]],
    ),
}


@click.command(short_help="List the downloads, datasets, runs and bundles under $TRON_HOME.")
@click.argument("kinds", nargs=-1, type=click.Choice(KIND_CHOICES))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout: the home and a list per kind.")
@pass_ui
def ls(ui: UI, kinds: tuple[str, ...], as_json: bool) -> None:
    """List what the stages wrote under $TRON_HOME (default: the current directory), newest first.

    Reads only the small files beside the data (dataset.json, config.json, summary.json, metrics.json,
    history.jsonl, manifest.json), so it is instant on any dataset. Prints one table per kind on
    stdout: name, created (UTC), size and the figures that tell them apart (a dataset's items and
    sessions, a run's epochs and best validation Recall@20, its test Recall@20 once evaluated). With
    --json, one object: {"home": PATH, "downloads": [...], "datasets": [...], "runs": [...],
    "bundles": [...]}, every path absolute. KINDS narrows the listing.

    \b
    Examples:
        tron ls
        tron ls runs
        tron ls --json | jq -r '.runs[] | select(.status == "complete") | .path'
    """
    from tron_cli.api.handles import ls as list_artifacts
    from tron_cli.workspace import home
    from tron_cli.workspace.inventory import KINDS, PLURALS

    wanted = tuple(PLURALS[kind] for kind in kinds) or KINDS
    artifacts = list_artifacts(*kinds)
    if as_json:
        by_kind: dict[str, list[dict[str, Any]]] = {f"{kind}s": [] for kind in wanted}
        for artifact in artifacts:
            by_kind[f"{artifact.kind}s"].append(artifact.to_dict())
        ui.emit_json({"home": str(home.home().resolve()), **by_kind})
        return
    if not artifacts:
        ui.result(f"Nothing under {shown(home.home())} yet: tron download synthetic && tron preprocess && tron train --preset small")
        return
    for kind in wanted:
        rows = [a for a in artifacts if a.kind == kind]
        if rows:
            columns, cells = COLUMNS[kind]
            table = [[a.name, when(a.created), human_size(a.size), *cells(a)] for a in rows]
            if "status" not in columns and any(a.status != "complete" for a in rows):  # a damaged entry says so
                columns, table = [*columns, "status"], [[*row, a.status] for row, a in zip(table, rows)]
            ui.table(f"{kind}s", [kind, "created (UTC)", "size", *columns], table, stdout=True)
