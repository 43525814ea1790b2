"""Benchmark `tron preprocess otto` on OTTO-scale synthetic input: wall time and peak RSS.

    python benchmarks/preprocess.py                  # full scale: 12.9M train sessions, ~216M events, 1.8M items
    python benchmarks/preprocess.py --scale 0.05     # a 5 % slice

The raw files are generated once (by `tron download synthetic`'s generator, in OTTO's JSON-lines format and
file names) into --workdir and reused; `tron preprocess otto --input DIR` then runs as a child process so its
peak resident memory can be read from the kernel. Prints one table, with the dataset's digest (what it holds,
`artifacts.sessions.dataset_digest`: equal digests, equal datasets, whichever tron wrote them); asserts nothing
about time. --keep leaves the dataset in --workdir; otherwise it is deleted after the digest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tron_cli.artifacts.sessions import dataset_digest

OTTO_TRAIN_SESSIONS = 12_899_779
OTTO_ITEMS = 1_855_603
TRAIN_SHARE = 0.8  # the generator puts sessions starting in the first 4 of 5 weeks into train


def generate(workdir: Path, scale: float, seed: int) -> Path:
    from tron_cli.datasets.synthetic import generate as make

    sessions = int(OTTO_TRAIN_SESSIONS * scale / TRAIN_SHARE)
    items = max(1000, int(OTTO_ITEMS * scale**0.5)) if scale < 1 else OTTO_ITEMS
    raw = workdir / f"otto-synthetic-{scale:g}"
    marker = raw / "parameters.json"
    wanted = {"sessions": sessions, "items": items, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return raw
    started = time.perf_counter()
    paths = make(raw, sessions, items, seed)
    paths[0].rename(raw / "otto-recsys-train.jsonl")
    paths[1].rename(raw / "otto-recsys-test.jsonl")
    marker.write_text(json.dumps(wanted))
    print(f"generated {sessions:,} sessions over {items:,} items in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of OTTO's size (1.0 = full)")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "tron-bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-limit", default="auto", help="tron preprocess --memory-limit (auto: a quarter of the machine's memory)")
    parser.add_argument("--keep", action="store_true", help="keep the dataset written (it is as large as a few GB at full scale)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    raw = generate(args.workdir, args.scale, args.seed)
    out = args.workdir / f"dataset-{args.scale:g}"
    command = [sys.executable, "-m", "tron_cli", "-q", "preprocess", "otto", "--input", str(raw), "--out", str(out), "--force", "--json"]
    command += ["--memory-limit", args.memory_limit]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"preprocess failed: {result.stderr.strip()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports KiB
    summary = json.loads(result.stdout)
    size = sum(p.stat().st_size for p in raw.glob("otto-recsys-*.jsonl"))
    rows = [
        ("machine", f"{platform.machine()}, {os.cpu_count()} cores"),
        ("input", f"{size / 1e9:.2f} GB JSON lines"),
        ("train sessions / events", f"{summary['train']['sessions']:,} / {summary['train']['events']:,}"),
        ("valid sessions / events", f"{summary['valid']['sessions']:,} / {summary['valid']['events']:,}"),
        ("test sessions / events", f"{summary['test']['sessions']:,} / {summary['test']['events']:,}"),
        ("items", f"{summary['n_items']:,}"),
        ("wall time", f"{seconds:.1f} s ({size / 1e6 / seconds:.0f} MB/s)"),
        ("peak RSS", f"{peak / 2**30:.2f} GiB (--memory-limit {args.memory_limit})"),
        ("output digest", dataset_digest(out)),
    ]
    if not args.keep:
        shutil.rmtree(out)
    width = max(len(name) for name, _ in rows)
    print(f"tron preprocess otto, scale {args.scale:g}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
