"""Benchmark full-catalogue evaluation against the machine's floor and a stand-in of the reference's validation loop.

    python benchmarks/evaluate.py                                  # 50,000 items, d = 200, 20,000 targets
    python benchmarks/evaluate.py --items 1800000 --targets 2000   # OTTO's catalogue
    python benchmarks/evaluate.py --no-reference                   # tron's ranking and its roofline only

A random SASRec (d = 200, 2 layers, max length 50) and OTTO-shaped test sessions (benchmarks/_data.py). `tron`'s
side is `tron evaluate`'s loop, protocol `all`: every target of every session scored from its own window of
preceding clicks against the whole catalogue in fp32, ranked by counting. The roofline: the benchmark first
measures the machine's fp32 matrix throughput (a large product) and memory bandwidth (a large copy); the floor
of the work is the encoder's and the scoring product's arithmetic at that throughput plus one read of the
(targets x items) scores at that bandwidth; the fraction of the floor reached is floor / measured time.

**The reference stand-in is not the reference code** (otto-de/TRON's Lightning loop cannot run here): it
re-states in our words what its validation step does per batch of 128 sessions, as read in its
`src/shared/evaluate.py`: one pass over the last 50 clicks of each session, then for every column a
(batch x catalogue) score matrix, the padding item set to -inf, a top-20 and the target's place in it. Both sides
score the same sessions with the same network; each figure is targets/s, the median of the rounds (the sides
alternate). Prints a table; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import sessions as make_sessions
from _roofline import describe, machine_rates, sync

from tron_cli.artifacts.sessions import Sessions
from tron_cli.batching import SessionStore
from tron_cli.evaluation.procedures import EvalOptions, accumulate
from tron_cli.inference.scorer import Scorer
from tron_cli.models.sasrec import SASRec, SASRecConfig
from tron_cli.runtime import exact_fp32, resolve_device

OTTO_TEST_TARGETS = 10_700_000
REFERENCE_BATCH = 128  # sessions per validation batch in the reference's configs


def encoder_flops(model: SASRec, store: SessionStore) -> float:
    """The least arithmetic of the encoder for protocol `all`: one window of preceding clicks per target (with
    right-aligned positions no two targets share a state), every block over every click of it but the last block,
    which needs keys and values of every click and the rest only for the newest. 2 FLOPs per weight per click, plus
    attention's 4 x keys x d per query."""
    positions = store.target_positions(last_only=False)
    context = (positions - store.offsets[store.session_of(positions)]).clamp(max=model.max_length).double()
    tokens, targets = float(context.sum()), float(len(context))
    *inner, last = list(model.blocks)
    keys_and_values = 2 * 3 * model.config.hidden_size**2 // 3  # the last block's key and value projections
    every_click = sum(p.numel() for block in inner for p in block.parameters()) + keys_and_values
    newest_only = sum(p.numel() for p in last.parameters()) - keys_and_values
    d = model.config.hidden_size
    attention = 4 * d * (len(inner) * float((context * (context + 1) / 2).sum()) + tokens)  # a click attends to those before it
    return 2 * every_click * tokens + 2 * newest_only * targets + attention


@torch.no_grad()
def reference_pass(model: SASRec, store: SessionStore, cutoff: int = 20) -> int:
    """The reference stand-in's validation loop over `store`; the number of targets it ranked."""
    width = model.max_length + 1
    table = model.item_embedding  # (N + 1, d): the reference scores against the whole table, padding row included
    n_targets, hits = 0, torch.zeros((), dtype=torch.long, device=table.device)
    with exact_fp32():
        for first in range(0, len(store) - REFERENCE_BATCH + 1, REFERENCE_BATCH):  # the last partial batch dropped
            sequence = store.tail_windows(torch.arange(first, first + REFERENCE_BATCH, device=store.device), width)
            inputs, labels = sequence[:, :-1], sequence[:, 1:]
            states = model(inputs)  # (B, T, d)
            mask = inputs != 0
            for column in range(inputs.shape[1]):
                logits = states[:, column] @ table.T  # (B, N + 1)
                logits[:, 0] = float("-inf")
                top = torch.topk(logits, cutoff, dim=1).indices
                hit = (top == labels[:, column, None]) & mask[:, column, None]
                hits += hit.any(1).sum()
            n_targets += int(mask.sum())  # read once per batch, not per column: no wait for the device in the loop
    return n_targets


def tron_pass(model: SASRec, store: SessionStore, chunk_size: int) -> int:
    """`tron evaluate`'s loop (protocol all) over `store`; the number of targets it ranked."""
    result = accumulate(Scorer(model), store, False, EvalOptions(cutoffs=(20,), chunk_size=chunk_size)).result()
    return int(result["n_targets"])


def otto_shaped(items: int, targets: int, seed: int) -> Sessions:
    """OTTO-shaped sessions with (about) `targets` targets: every click but each session's first is one."""
    rng = np.random.default_rng(seed)
    test = make_sessions(max(1, targets // 10), items, rng)
    while test.n_events - len(test) < targets:
        test = make_sessions(len(test) * 2, items, rng)
    keep = int(np.searchsorted(np.cumsum(test.lengths - 1), targets)) + 1
    return test.select(np.arange(keep))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--targets", type=int, help="targets to rank (default: 200k on CUDA, 20k on CPU)")
    parser.add_argument("--chunk-size", type=int, default=EvalOptions.chunk_size, help="items per chunk of scores (tron evaluate's --chunk-size)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side, alternating")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference stand-in")
    args = parser.parse_args()
    device = resolve_device(args.device)
    targets = args.targets or (200_000 if device.type == "cuda" else 20_000)
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(hidden_size=args.hidden, max_length=50), n_items=args.items).to(device).eval()
    test = otto_shaped(args.items, targets, seed=0)
    store = SessionStore(test, device, min_length=2)
    flops_rate, bandwidth = machine_rates(device, args.hidden)
    tron_pass(model, SessionStore(test.select(np.arange(min(50, len(test)))), device, 2), args.chunk_size)  # warm-up
    sides = {"tron": lambda: tron_pass(model, store, args.chunk_size)}
    if not args.no_reference:
        sides["reference stand-in"] = lambda: reference_pass(model, store)
    rates: dict[str, list[float]] = {name: [] for name in sides}
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, side in sides.items():
            sync(device)
            started = time.perf_counter()
            n_targets = side()
            sync(device)
            seconds[name].append(time.perf_counter() - started)
            rates[name].append(n_targets / seconds[name][-1])
    q = store.n_events - len(store)
    scoring = 2.0 * q * args.items * args.hidden
    encoder = encoder_flops(model, store)
    score_bytes = 4.0 * q * args.items
    floor = (scoring + encoder) / flops_rate + score_bytes / bandwidth
    measured = statistics.median(seconds["tron"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"full-catalogue evaluation on {name}: {args.items:,} items, d = {args.hidden}, {q:,} targets (protocol all), medians of {args.rounds} rounds")
    print(f"machine: {describe(flops_rate, bandwidth)}")
    print(
        f"floor: scoring {scoring / 1e9:,.0f} GFLOP + encoder {encoder / 1e9:,.0f} GFLOP -> {(scoring + encoder) / flops_rate:.2f} s;"
        f" one read of the scores {score_bytes / 1e9:,.2f} GB -> {score_bytes / bandwidth:.2f} s; in all {floor:.2f} s"
    )
    print()
    print("| side | targets/s | s per pass | fraction of the floor | OTTO test (10.7M targets) at this rate |")
    print("|---|---:|---:|---:|---:|")
    for label in sides:
        rate = statistics.median(rates[label])
        fraction = f"{floor / statistics.median(seconds[label]):.0%}" if label == "tron" else "—"
        print(f"| {label} | {rate:,.0f} | {statistics.median(seconds[label]):.2f} | {fraction} | {OTTO_TEST_TARGETS / rate / 60:,.1f} min |")
    if "reference stand-in" in rates:
        print(f"\ntron / reference stand-in (targets/s): {statistics.median(rates['tron']) / statistics.median(rates['reference stand-in']):.1f}x")
    print(f"tron's loop: {measured:.2f} s for {q:,} targets, {floor / measured:.0%} of the floor")


if __name__ == "__main__":
    main()
