"""`tron pareto RUN`: the click/order front of a MultiTRON run (the click face of `tron_cli.stages.pareto`)."""

from __future__ import annotations

from pathlib import Path

import click

from tron_cli.choices import DEVICES, SPLITS
from tron_cli.cli._params import Finite, Whole
from tron_cli.cli._ui import UI, pass_ui, shown


@click.command(short_help="Sweep a MultiTRON run's preference: the click/order front and its hypervolume.")
@click.argument("run", required=False, type=click.Path(path_type=Path))
@click.option("--points", type=Whole(min=1), default=25, show_default=True, help="Steps of the order weight: points + 1 evenly spaced weights from 0 to 1.")
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True, help="Which split to score.")
@click.option("--data", type=click.Path(path_type=Path), help="Dataset dir (default: the run's own).")
@click.option("--limit", type=Finite(), default=1.0, show_default=True, help="Sessions scored: a fraction (<= 1) or a number (> 1).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="Where to score.")
@click.option("--json", "as_json", is_flag=True, help="Print the front as one JSON object on stdout.")
@pass_ui
def pareto(ui: UI, run, points, split, data, limit, device, as_json) -> None:
    """Evaluate a MultiTRON run (tron train --objective multitron) at evenly spaced preference vectors.

    For each order weight w in 0, 1/POINTS, ..., 1 the model reads the preference [1 - w, w], and every
    target of the split is ranked against the whole catalogue (deterministic: no random negatives):
    click Recall@20 and MRR@20, order recall@20 (ordered targets in the top 20 / ordered targets) and
    order density@20 (ordered targets in the top 20 / targets in the top 20). The hypervolume of the
    (Recall@20, order recall@20) points is taken against the reference point (0, 0). RUN: a run dir or
    its name under $TRON_HOME/runs/ (default: the newest). Writes RUN/pareto.json (tron plot RUN draws it).

    \b
    Examples:
      tron pareto                                  # the newest run, 26 points on test
      tron pareto runs/otto-sasrec-1 --points 10 --split valid --json
    """
    from tron_cli.stages.pareto import pareto as run_stage
    from tron_cli.workspace.home import resolve_run

    front = run_stage(resolve_run(run), data, points=points, split=split, device=device, limit=limit, report=ui)
    rows = [
        [f"{point['order_weight']:.3f}", point["recall@20"], point["mrr@20"], point["order_recall@20"], point["order_density@20"]] for point in front["points"]
    ]
    ui.table(f"front of {shown(front['run'])} on {split}", ["order weight", "Recall@20", "MRR@20", "order recall@20", "order density@20"], rows)
    ui.info(f"hypervolume of (Recall@20, order recall@20) against (0, 0): {front['hypervolume']:.5f}; wrote {Path(front['run']) / 'pareto.json'}")
    if as_json:
        ui.emit_json(front)
