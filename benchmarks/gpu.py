"""The benchmarks of `benchmarks/gpu.sh`: TRON XL training, full cross-entropy, evaluation and recommendation at
OTTO's catalogue size on one GPU, against the targets; one table, and JSON + Markdown in --out.

    python benchmarks/gpu.py --out DIR [--tests LOG] [--budget SECONDS]   # on a CUDA machine (gpu.sh calls it)
    python benchmarks/gpu.py --dry-run --out DIR                          # anywhere: tiny sizes on the CPU

Data is generated here (OTTO-shaped synthetic sessions, benchmarks/_data.py). Training rows run the epoch
function `tron train` runs (benchmarks/train.py `measure`); the grid is dense and row-sparse Adam, bf16 and
fp32, eager and `--compile`. Rows that would not fit in --budget seconds (counted from --started) are left
out and say so. A torch.profiler table of the TRON XL steps goes into the Markdown, to show where time goes
where a target is missed. Extrapolated figures say so. Asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import sessions as make_sessions
from _data import write_dataset
from train import measure

from tron_cli.artifacts.sessions import read_dataset
from tron_cli.batching import SessionStore
from tron_cli.evaluation.procedures import EvalOptions, accumulate
from tron_cli.inference.scorer import Scorer
from tron_cli.inference.scoring import score_sessions
from tron_cli.models.sasrec import SASRec, SASRecConfig

OTTO_ITEMS = 1_800_000
OTTO_TEST_TARGETS = 10_700_000
TARGETS: dict[str, float] = {"dense Adam": 30_000, "row-sparse Adam": 100_000, "OTTO test set ranked": 60.0}
XL = dict(model="sasrec", uniform_negatives=16384, batch_negatives=127, topk=100, hidden_size=200, batch_size=128, loss="ssm")
SMALL = dict(uniform_negatives=256, batch_negatives=31, topk=32, hidden_size=32, batch_size=32)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_rows(dataset, device: str, sizes: dict[str, Any], deadline: float, dry: bool) -> list[dict[str, Any]]:
    """TRON XL sessions/s: {dense, row-sparse} Adam x {bf16, fp32} x {eager, compiled}; eager rows first."""
    rows: list[dict[str, Any]] = []
    grid = [(o, p, c) for c in (False, True) for o in ("adam", "sparse-adam") for p in ("bf16", "fp32")]
    for optimizer, precision, compiled in grid:
        label = f"TRON XL, {'dense' if optimizer == 'adam' else 'row-sparse'} Adam, {precision}{', --compile' if compiled else ''}"
        target = TARGETS["dense Adam" if optimizer == "adam" else "row-sparse Adam"]
        if (compiled and dry) or time.time() + sizes["train_seconds"] * (3 if compiled else 1) > deadline:
            rows.append({"what": label, "skipped": "dry run" if dry else "time budget"})
            continue
        options = {**XL, **sizes["model"], "optimizer": optimizer, "precision": precision, "compile": compiled, "device": device}
        result = measure(label, options, dataset=dataset, steps=sizes["steps"], warmup=sizes["warmup"] * (3 if compiled else 1))
        rows.append({"what": label, "value": result["sessions/s"], "unit": "sessions/s", "target": target, **_extra(result)})
    return rows


def _extra(result: dict[str, Any]) -> dict[str, Any]:
    return {"ms/step": result["ms/step"], "events/s": result["events/s"], "peak GiB": result["peak GiB"]}


def ce_row(dataset, device: str, sizes: dict[str, Any], deadline: float) -> dict[str, Any]:
    label = "--loss ce (full softmax), dense Adam"
    if time.time() + sizes["train_seconds"] > deadline:
        return {"what": label, "skipped": "time budget"}
    options = {**XL, **sizes["model"], "loss": "ce", "topk": 0, "uniform_negatives": 0, "batch_negatives": 0, "precision": "bf16", "device": device}
    result = measure(label, options, dataset=dataset, steps=max(2, sizes["steps"] // 4), warmup=sizes["warmup"])
    return {"what": label, "value": result["ms/step"], "unit": "ms/step", **_extra(result)}


def profile_table(dataset, device: str, sizes: dict[str, Any], optimizer: str) -> str:
    """torch.profiler's table of a few TRON XL steps (bf16, eager): where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    options = {**XL, **sizes["model"], "optimizer": optimizer, "precision": "bf16", "device": device}
    if device == "cuda":
        measure("warm-up", options, dataset=dataset, steps=1, warmup=1)  # kernels chosen and memory taken before the profile
    with profile(activities=activities) as prof:
        measure("profile", options, dataset=dataset, steps=sizes["profile_steps"], warmup=1)
    return str(prof.key_averages().table(sort_by="cuda_time_total" if device == "cuda" else "self_cpu_time_total", row_limit=20))


def evaluate_row(device: torch.device, sizes: dict[str, Any]) -> list[dict[str, Any]]:
    """Targets/s of `tron evaluate`'s ranking (protocol all, fp32, full catalogue) with a random SASRec."""
    items, targets = sizes["items"], sizes["eval_targets"]
    model = SASRec(SASRecConfig(hidden_size=sizes["model"].get("hidden_size", 200), max_length=50), n_items=items).to(device).eval()
    rng = np.random.default_rng(1)
    test = make_sessions(max(2, targets // 10), items, rng)
    while test.n_events - len(test) < targets:
        test = make_sessions(len(test) * 2, items, rng)
    keep = int(np.searchsorted(np.cumsum(test.lengths - 1), targets)) + 1
    store = SessionStore(test.select(np.arange(keep)), device, min_length=2)
    options = EvalOptions(cutoffs=(20,))
    accumulate(Scorer(model), SessionStore(test.select(np.arange(min(20, keep))), device, 2), False, options)  # warm-up
    _sync(device)
    started = time.perf_counter()
    result = accumulate(Scorer(model), store, False, options).result()
    _sync(device)
    rate = result["n_targets"] / (time.perf_counter() - started)
    return [
        {"what": f"tron evaluate ranking, {items:,} items", "value": rate, "unit": "targets/s"},
        {
            "what": "OTTO test set (10.7M targets) ranked",
            "value": OTTO_TEST_TARGETS / rate,
            "unit": "s",
            "target": TARGETS["OTTO test set ranked"],
            "note": "extrapolated from the row above",
        },
    ]


def recommend_rows(device: torch.device, sizes: dict[str, Any]) -> list[dict[str, Any]]:
    """Sessions/s of `tron recommend`'s scoring core (top-20 over the whole catalogue) per batch size."""
    model = SASRec(SASRecConfig(hidden_size=sizes["model"].get("hidden_size", 200), max_length=50), n_items=sizes["items"]).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    rows = []
    with torch.no_grad():
        for batch in sizes["recommend_batches"]:
            items = torch.randint(1, sizes["items"] + 1, (batch, 50), generator=generator)
            lengths = torch.randint(1, 51, (batch,), generator=generator)
            windows = torch.where(torch.arange(50)[None, :] >= (50 - lengths)[:, None], items, 0).to(device)
            score_sessions(Scorer(model), windows, 20)  # warm-up
            _sync(device)
            started = time.perf_counter()
            for _ in range(3):
                score_sessions(Scorer(model), windows, 20)
            _sync(device)
            rows.append(
                {"what": f"tron recommend, batches of {batch:,} sessions, top-20", "value": 3 * batch / (time.perf_counter() - started), "unit": "sessions/s"}
            )
    return rows


def tests_row(log: Path | None) -> dict[str, Any]:
    """The CUDA tests' summary line (pytest -m cuda), as gpu.sh ran them."""
    if log is None or not log.is_file():
        return {"what": "CUDA tests (pytest -m cuda)", "skipped": "dry run"}
    lines = [line for line in log.read_text().splitlines() if " passed" in line or " failed" in line or " error" in line]
    summary = lines[-1].strip("= ") if lines else "no summary (see tests.log)"
    return {"what": "CUDA tests (pytest -m cuda)", "value": summary, "unit": "", "ok": "failed" not in summary and "error" not in summary}


def _format(row: dict[str, Any], dry: bool) -> tuple[str, str, str]:
    if "skipped" in row:
        return row["what"], f"skipped ({row['skipped']})", ""
    value = row["value"]
    text = value if isinstance(value, str) else (f"{value:,.0f}" if value >= 100 else f"{value:,.2f}")
    text = f"{text} {row['unit']}".strip()
    if row.get("note"):
        text += f" ({row['note']})"
    verdict = ""
    if "target" in row and not dry:  # targets are for the real sizes on a GPU
        lower_is_better = row["unit"] == "s"
        met = value <= row["target"] if lower_is_better else value >= row["target"]
        verdict = f"{'met' if met else 'MISSED'} ({'<=' if lower_is_better else '>='} {row['target']:,})"
    elif "ok" in row:
        verdict = "ok" if row["ok"] else "FAILED"
    return row["what"], text, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks that the script runs")
    parser.add_argument("--tests", type=Path, help="the log of the CUDA tests, for the table")
    parser.add_argument("--started", type=float, default=time.time(), help="when the whole run started (epoch seconds)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds the whole run may take, tests included")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tron-gpu-bench")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run, or on a GPU machine")
    device = "cpu" if args.dry_run else "cuda"
    sizes: dict[str, Any]
    if args.dry_run:
        sizes = dict(items=500, sessions=400, steps=2, warmup=1, profile_steps=1, train_seconds=0, eval_targets=200, recommend_batches=[8], model=SMALL)
    else:
        sizes = dict(
            items=OTTO_ITEMS,
            sessions=100_000,
            steps=60,
            warmup=10,
            profile_steps=5,
            train_seconds=25,
            eval_targets=300_000,
            recommend_batches=[1024, 8192],
            model={},
        )
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are fp32 (bf16 rows use autocast)
    deadline = args.started + args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = read_dataset(write_dataset(args.workdir / f"train-{sizes['sessions']}-{sizes['items']}", sizes["sessions"], sizes["items"]))
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    rows = [tests_row(args.tests)]
    rows += train_rows(dataset, device, sizes=sizes, deadline=deadline, dry=args.dry_run)
    rows.append(ce_row(dataset, device, sizes, deadline))
    rows += evaluate_row(torch.device(device), sizes)
    rows += recommend_rows(torch.device(device), sizes)
    profiles = {optimizer: profile_table(dataset, device, sizes, optimizer) for optimizer in ("adam", "sparse-adam")}

    title = f"tron on {name}, torch {torch.__version__}, {sizes['items']:,} items{' (dry run: tiny sizes, CPU)' if args.dry_run else ''}"
    table = [("", "measured", "target"), *(_format(row, args.dry_run) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    print(title)
    for i, line in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    markdown = [f"### {title}", "", "| | measured | target |", "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in table[1:])]
    for optimizer, text in profiles.items():
        markdown += ["", f"torch.profiler, TRON XL bf16 eager, {optimizer}, {sizes['profile_steps']} steps:", "", "```", text, "```"]
    (args.out / "gpu.md").write_text("\n".join(markdown) + "\n")
    (args.out / "gpu.json").write_text(json.dumps({"device": name, "torch": torch.__version__, "dry_run": args.dry_run, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'} (with the profiler tables)")


if __name__ == "__main__":
    main()
