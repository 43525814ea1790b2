"""The daily loop measured: warm start vs cold start vs yesterday's model, day after day, on a log with item churn.

    python benchmarks/daily.py                       # 5 days, a 5-day window, 600 sessions a day, 2,000 items, 60 born/retired a day
    python benchmarks/daily.py --days 3 --cold-epochs 4 --sessions-per-day 300

A synthetic daily log (`tron download synthetic --days --churn`: items born and retired every day, new ones
promoted on their first days) is generated, then for each day d the real commands run as a daily job would:

- `tron preprocess --train <the window of the last --window days up to d> --catalogue-from <dataset of d - 1>`
  (the next day's log is its test file, so the items only it holds never enter the catalogue);
- (a) warm: `tron train --init-from <yesterday's warm run> --epochs 1` on today's window;
- (b) cold: `tron train --epochs --cold-epochs` from scratch on the same dataset (the full recipe);
- (c) stale: yesterday's warm run, unchanged (what is served when the loop does not run).

The first day trains a cold run that the first warm start grows from. Each model then answers every click of the
next day's sessions from the clicks before it, as `tron serve` would (raw ids in, an id its catalogue lacks is
skipped, exact top-20 over its whole catalogue: `Predictor.encode` and `answer`, what `tron recommend` runs), and
Recall@20 and MRR@20 are the means over those targets: a target the model cannot know (a new item) is a miss.
Printed per day: the share of next-day targets that are new items (not in yesterday's catalogue, so unknown to
the stale model), the three models' Recall@20 and MRR@20, and the wall-clock minutes of each `tron train` (process
start included) beside its training loop's own seconds (summary.json's `train_seconds`). Trainings use --preset
small on the CPU, each in a process of its own. A benchmark prints numbers and never asserts them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from tron_cli.inference.predictor import load_predictor
from tron_cli.inference.session_input import Batch

RECIPE = ["--preset", "small", "--device", "cpu"]
CUTOFF = 20
QUERIES = 1024  # prefixes scored together


def tron(home: Path, *args: str) -> float:
    """Run `tron ARGS` in a process of its own under $TRON_HOME=home; its wall-clock seconds."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tron_cli", "-q", *args], env={**os.environ, "TRON_HOME": str(home)}, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"tron {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return time.perf_counter() - started


def loop_seconds(run: Path) -> float:
    """The training loop's own seconds (summary.json's train_seconds): the run's time without process start."""
    return float(json.loads((run / "summary.json").read_text())["train_seconds"])


def clicks(path: Path) -> list[list[int]]:
    """Each session's clicks (raw aids, in time order) of an OTTO-format day file."""
    sessions = []
    for line in path.read_text().splitlines():
        events = sorted(json.loads(line)["events"], key=lambda event: event["ts"])
        sessions.append([event["aid"] for event in events if event["type"] == "clicks"])
    return [session for session in sessions if len(session) >= 2]


def prefixes(sessions: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets (Q+1,), ids, targets (Q,)): every click after a session's first is a target, its query the clicks before it."""
    queries = [(session[:t], session[t]) for session in sessions for t in range(1, len(session))]
    lengths = np.array([len(query) for query, _ in queries], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return offsets, np.array([i for query, _ in queries for i in query], dtype=np.int64), np.array([target for _, target in queries], dtype=np.int64)


def next_day_metrics(run: Path, offsets: np.ndarray, ids: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Recall@20 and MRR@20 of the model in `run` on the next day's targets, answering as `tron serve` does."""
    predictor = load_predictor(run, torch.device("cpu"), exact=True)
    hits, reciprocal = 0, 0.0
    for first in range(0, len(targets), QUERIES):
        rows = np.arange(first, min(first + QUERIES, len(targets)))
        starts = offsets[rows[0]]
        batch = Batch([None] * len(rows), [""] * len(rows), offsets[rows[0] : rows[-1] + 2] - starts, ids[starts : offsets[rows[-1] + 1]])
        answer = predictor.answer(predictor.encode(batch), np.arange(len(rows)), k=CUTOFF)
        # a query without a known click gets the most popular items, as the server answers it: they count too
        found = (np.asarray(predictor.catalogue.raw_ids(np.maximum(answer.ids, 1))) == targets[rows, None]) & (answer.ids > 0)
        rank = np.where(found.any(1), found.argmax(1) + 1, 0)
        hits += int((rank > 0).sum())
        reciprocal += float((1.0 / rank[rank > 0]).sum())
    return {"recall": hits / len(targets), "mrr": reciprocal / len(targets)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=5, help="days on which warm, cold and stale are compared")
    parser.add_argument("--window", type=int, default=5, help="days of log each day's dataset trains on")
    parser.add_argument("--sessions-per-day", type=int, default=600)
    parser.add_argument("--items", type=int, default=2000, help="items of the first day")
    parser.add_argument("--churn", type=int, default=60, help="items born and retired each day")
    parser.add_argument("--cold-epochs", type=int, default=8, help="epochs of the cold start (the full recipe)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm-args", default="", help='more `tron train` flags for the warm start only, e.g. "--lr 0.001 --lr-schedule cosine"')
    parser.add_argument("--workdir", type=Path, default=None, help="where the log, datasets and runs go (default: a temporary directory)")
    args = parser.parse_args()
    home = args.workdir or Path(tempfile.mkdtemp(prefix="tron-daily-"))
    home.mkdir(parents=True, exist_ok=True)
    total = args.window + args.days + 1
    load_before = os.getloadavg()
    log = [
        "--days",
        str(total),
        "--churn",
        str(args.churn),
        "--items",
        str(args.items),
        "--sessions",
        str(args.sessions_per_day * total),
        "--seed",
        str(args.seed),
    ]
    tron(home, "download", "synthetic", *log, "--force")
    raw = home / "data" / "raw" / "synthetic"

    def prepare(day: int) -> Path:
        """Dataset `day-D`: the window ending on day D to train on, day D + 1 as its test file, ids from day D - 1's."""
        window = home / f"window-{day:03d}.jsonl"
        window.write_bytes(b"".join((raw / f"day-{d:03d}.jsonl").read_bytes() for d in range(day - args.window + 1, day + 1)))
        lineage = ["--catalogue-from", f"day-{day - 1:03d}"] if day > args.window else []
        options = ["--test", str(raw / f"day-{day + 1:03d}.jsonl"), "--no-valid", "--unknown-test-items", "drop", "--name", f"day-{day:03d}"]
        tron(home, "preprocess", "--train", str(window), *options, *lineage)
        return home / "data" / f"day-{day:03d}"

    first = args.window
    warm = home / "runs" / f"cold-{first:03d}"
    seconds = tron(home, "train", str(prepare(first)), *RECIPE, "--epochs", str(args.cold_epochs), "--out", str(warm))
    print(f"day {first}: cold start {seconds / 60:.1f} min (the first warm start's parent)", file=sys.stderr, flush=True)
    rows: list[dict[str, Any]] = []
    for day in range(first + 1, first + args.days + 1):
        data = prepare(day)
        stale = warm
        warm = home / "runs" / f"warm-{day:03d}"
        warm_seconds = tron(home, "train", str(data), *RECIPE, "--epochs", "1", *shlex.split(args.warm_args), "--init-from", str(stale), "--out", str(warm))
        cold = home / "runs" / f"cold-{day:03d}"
        cold_seconds = tron(home, "train", str(data), *RECIPE, "--epochs", str(args.cold_epochs), "--out", str(cold))
        offsets, ids, targets = prefixes(clicks(raw / f"day-{day + 1:03d}.jsonl"))
        yesterday = set(pq.read_table(home / "data" / f"day-{day - 1:03d}" / "items.parquet").column("id").to_pylist())
        row: dict[str, Any] = {
            "day": day,
            "targets": len(targets),
            "new": float(np.mean([target not in yesterday for target in targets.tolist()])),
            "warm": next_day_metrics(warm, offsets, ids, targets),
            "cold": next_day_metrics(cold, offsets, ids, targets),
            "stale": next_day_metrics(stale, offsets, ids, targets),
            "warm_minutes": warm_seconds / 60,
            "cold_minutes": cold_seconds / 60,
            "warm_loop": loop_seconds(warm),
            "cold_loop": loop_seconds(cold),
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    print(
        f"\nthe daily loop on synthetic data: {args.sessions_per_day} sessions a day, {args.items:,} items, {args.churn} born and {args.churn} retired a day,"
        f" {args.window}-day window; --preset small on the CPU ({os.cpu_count()} cores, load {load_before[0]:.1f} before, {load_after[0]:.1f} after),"
        f" warm: yesterday's warm run trained on with --epochs 1{' ' + args.warm_args if args.warm_args else ''} (a repeated flag's last value wins), cold: {args.cold_epochs} epochs, stale: yesterday's warm run; torch {torch.__version__}"
    )
    print(
        "| day | next-day targets | new items | R@20 warm | R@20 cold | R@20 stale | MRR@20 warm | MRR@20 cold | MRR@20 stale | train min warm | train min cold | loop s warm | loop s cold |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['day']} | {row['targets']:,} | {row['new']:.1%} | {row['warm']['recall']:.4f} | {row['cold']['recall']:.4f} | {row['stale']['recall']:.4f}"
            f" | {row['warm']['mrr']:.4f} | {row['cold']['mrr']:.4f} | {row['stale']['mrr']:.4f} | {row['warm_minutes']:.2f} | {row['cold_minutes']:.2f}"
            f" | {row['warm_loop']:.1f} | {row['cold_loop']:.1f} |"
        )
    mean = {
        key: float(np.mean([row[name][metric] for row in rows]))
        for name in ("warm", "cold", "stale")
        for metric in ("recall", "mrr")
        for key in [f"{name} {metric}"]
    }
    warm_minutes, cold_minutes = (float(np.mean([row[f"{name}_minutes"] for row in rows])) for name in ("warm", "cold"))
    warm_loop, cold_loop = (float(np.mean([row[f"{name}_loop"] for row in rows])) for name in ("warm", "cold"))
    print(
        f"| mean | | {np.mean([row['new'] for row in rows]):.1%} | {mean['warm recall']:.4f} | {mean['cold recall']:.4f} | {mean['stale recall']:.4f}"
        f" | {mean['warm mrr']:.4f} | {mean['cold mrr']:.4f} | {mean['stale mrr']:.4f} | {warm_minutes:.2f} | {cold_minutes:.2f} | {warm_loop:.1f} | {cold_loop:.1f} |"
    )
    print(
        f"\nwarm - cold Recall@20: {100 * (mean['warm recall'] - mean['cold recall']):+.2f} points at {warm_minutes / cold_minutes:.2f} of its"
        f" training time with process start ({warm_loop / cold_loop:.2f} of its training loop's);"
        f" warm - stale: {100 * (mean['warm recall'] - mean['stale recall']):+.2f} points"
    )


if __name__ == "__main__":
    main()
