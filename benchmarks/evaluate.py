"""Benchmark full-catalogue evaluation: targets/s of `tron evaluate`'s ranking for an OTTO-shaped catalogue.

    python benchmarks/evaluate.py                       # 1.8M items, d = 200
    python benchmarks/evaluate.py --items 100000 --targets 20000

A random SASRec (d = 200, 2 layers, max length 50) and OTTO-shaped test sessions; every target is scored
against the whole catalogue in fp32 (chunks of items, ranks by counting, as `tron evaluate` does). Prints
targets/s, the time the whole OTTO test set (10.7M targets) would take at that rate, and the floor: one plain
fp32 matrix product of the same size on the same device. Asserts nothing about time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import sessions as make_sessions

from tron_cli.batching import SessionStore
from tron_cli.evaluation.procedures import EvalOptions, accumulate
from tron_cli.inference.scorer import Scorer
from tron_cli.models.sasrec import SASRec, SASRecConfig
from tron_cli.runtime import exact_fp32, resolve_device

OTTO_TEST_TARGETS = 10_700_000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--items", type=int, default=1_800_000)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--targets", type=int, help="targets to rank (default: 200k on CUDA, 2k on CPU)")
    parser.add_argument("--chunk-size", type=int, default=65536)
    args = parser.parse_args()
    device = resolve_device(args.device)
    targets = args.targets or (200_000 if device.type == "cuda" else 2_000)
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(hidden_size=args.hidden, max_length=50), n_items=args.items).to(device).eval()
    rng = np.random.default_rng(0)
    test = make_sessions(max(1, targets // 10), args.items, rng)
    while test.n_events - len(test) < targets:  # enough sessions for the requested number of targets
        test = make_sessions(len(test) * 2, args.items, rng)
    keep = np.searchsorted(np.cumsum(test.lengths - 1), targets) + 1
    store = SessionStore(test.select(np.arange(keep)), device, min_length=2)
    options = EvalOptions(cutoffs=(20,), chunk_size=args.chunk_size)
    accumulate(Scorer(model), SessionStore(test.select(np.arange(min(20, keep))), device, 2), False, options)  # warm-up
    _sync(device)
    started = time.perf_counter()
    result = accumulate(Scorer(model), store, False, options).result()
    _sync(device)
    seconds = time.perf_counter() - started
    # the floor: the same number of scores as one plain fp32 matrix product (no model, no ranking)
    hidden = torch.randn(min(targets, 8192), args.hidden, device=device)
    with exact_fp32(), torch.no_grad():
        hidden @ model.item_embedding[1:].T
        _sync(device)
        floor_started = time.perf_counter()
        hidden @ model.item_embedding[1:].T
        _sync(device)
        floor = (time.perf_counter() - floor_started) * result["n_targets"] / len(hidden)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rate = result["n_targets"] / seconds
    print(f"full-catalogue evaluation on {name}: {args.items:,} items, d = {args.hidden}, {result['n_targets']:,} targets")
    print(f"  {'targets/s':<32} {rate:,.0f}")
    print(f"  {'OTTO test (10.7M targets) at this rate':<32} {OTTO_TEST_TARGETS / rate / 60:,.1f} min")
    print(f"  {'fp32 GEMM floor for these targets':<32} {floor:.1f} s (ranking took {seconds:.1f} s, {seconds / floor:.1f}x the floor)")


if __name__ == "__main__":
    main()
