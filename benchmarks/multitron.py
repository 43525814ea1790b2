"""MultiTRON against single-objective TRON on the same synthetic data with orders, in one process.

Generates `tron download synthetic` data (orders of clicked items, by item propensity), preprocesses it, trains
TRON (`--loss ssm`) and MultiTRON (`--objective multitron`) with the same network, negatives, epochs and seed,
evaluates TRON on test (click Recall@20 and order recall@20) and sweeps MultiTRON's front on test
(`tron pareto`). Prints the front beside the single-objective point and draws both into a PNG.

    python benchmarks/multitron.py --out docs/multitron-front.png
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from tron_cli.cli import cli


def tron(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["-q", *args, "--json"], catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"tron {' '.join(args)} failed: {result.output}")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--beta", default="1")
    parser.add_argument("--regularization", default="0.5")
    parser.add_argument("--out", type=Path, default=Path("multitron-front.png"))
    args = parser.parse_args()
    network = ["--device", "cpu", "--hidden-size", "64", "--uniform-negatives", "256", "--batch-size", "64", "--topk", "64", "--max-length", "20"]
    network += ["--epochs", str(args.epochs), "--seed", "0"]
    with tempfile.TemporaryDirectory() as home:
        os.environ["TRON_HOME"] = home
        tron("download", "synthetic", "--sessions", str(args.sessions), "--items", str(args.items), "--seed", "3")
        data = tron("preprocess")["dataset"]
        seconds = {}
        started = time.perf_counter()
        tron("train", data, *network, "--loss", "ssm", "--out", f"{home}/tron")
        seconds["tron"] = time.perf_counter() - started
        started = time.perf_counter()
        multi = tron(
            "train", data, *network, "--objective", "multitron", "--beta", args.beta, "--regularization", args.regularization, "--out", f"{home}/multitron"
        )
        seconds["multitron"] = time.perf_counter() - started
        single = tron("evaluate", f"{home}/tron", "-k", "20")
        started = time.perf_counter()
        front = tron("pareto", f"{home}/multitron", "--points", str(args.points))
        seconds["pareto"] = time.perf_counter() - started
        draw(Path(home) / "multitron", single, args.out)
    print(
        f"synthetic {args.sessions} sessions x {args.items} items, d 64, {args.epochs} epochs; MultiTRON beta {args.beta}, regularization {args.regularization}"
    )
    print(f"MultiTRON best epoch {multi['best_epoch']} (valid hypervolume); test front hypervolume {front['hypervolume']:.4f} against (0, 0)")
    print("| model | order weight | Recall@20 | MRR@20 | order recall@20 | order density@20 |")
    print("|---|---|---|---|---|---|")
    print(f"| TRON (ssm) | - | {single['recall@20']:.4f} | {single['mrr@20']:.4f} | {single['order_recall@20']:.4f} | {single['order_density@20']:.4f} |")
    for point in front["points"]:
        print(
            f"| MultiTRON | {point['order_weight']:.2f} | {point['recall@20']:.4f} | {point['mrr@20']:.4f} | {point['order_recall@20']:.4f} | {point['order_density@20']:.4f} |"
        )
    print(f"seconds: TRON {seconds['tron']:.0f}, MultiTRON {seconds['multitron']:.0f}, pareto {seconds['pareto']:.0f}; plot {args.out}")


def draw(run: Path, single: dict, out: Path) -> None:
    """The front (as `tron plot --pareto` draws it) with TRON's single-objective point."""
    from tron_cli.charts import build_front_figure

    figure = build_front_figure(run)
    figure.set_size_inches(10.0, 4.2)
    for axes in figure.axes[:2]:  # order recall, order density (the third axes is the colour bar)
        axes.scatter([single["recall@20"]], [single[axes.get_ylabel()]], marker="*", s=180, color="black", zorder=3, label="TRON (clicks only)")
        axes.legend(loc="lower left", fontsize=8)
    figure.suptitle(f"MultiTRON front on test vs TRON, synthetic ({json.loads((run / 'pareto.json').read_text())['hypervolume']:.3f} hypervolume)", fontsize=9)
    figure.savefig(out, format="png", dpi=80)


if __name__ == "__main__":
    main()
