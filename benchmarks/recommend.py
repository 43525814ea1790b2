"""How fast `tron recommend` scores: single-session latency and batch throughput of its scoring core.

    python benchmarks/recommend.py                       # SASRec d=200, 2 layers, 1.8M items, on auto
    python benchmarks/recommend.py --items 100000 --device cpu --batch-sizes 64,256

A random SASRec (d=200, 2 blocks, max_length 50) over a catalogue of --items items goes through
`tron_cli.stages.recommend.score_sessions`, the function `tron recommend` calls for each batch once the input is
parsed: the state after each session's last click, fp32 scores against the whole catalogue in chunks, a
running top-k. Sessions are random, 1..50 clicks. The floor is one plain `hidden @ table.T` of the same size
(no transformer, no top-k), timed on the same machine; where its output would pass --floor-memory it is run
in row blocks that fit. A benchmark prints numbers and never asserts a time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tron_cli.inference.scorer import Scorer
from tron_cli.inference.scoring import score_sessions
from tron_cli.models.sasrec import SASRec, SASRecConfig
from tron_cli.runtime import resolve_device


def sessions(n_items: int, batch: int, max_length: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, max_length) left-padded sessions of random items and random lengths 1..max_length."""
    items = torch.randint(1, n_items + 1, (batch, max_length), generator=generator)
    lengths = torch.randint(1, max_length + 1, (batch,), generator=generator)
    return torch.where(torch.arange(max_length)[None, :] >= (max_length - lengths)[:, None], items, 0)


def timed(function, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def floor_seconds(hidden: torch.Tensor, table: torch.Tensor, memory: int, device: torch.device) -> float:
    """One plain product of hidden (B, d) with the whole table, into preallocated output (row blocks if large)."""
    rows = max(1, min(len(hidden), memory // (table.shape[0] * 4)))
    out = torch.empty(rows, table.shape[0], device=device)

    def product():
        for start in range(0, len(hidden), rows):
            block = hidden[start : start + rows]
            torch.matmul(block, table.T, out=out[: len(block)])

    product()  # warm-up: kernels chosen, pages touched
    return min(timed(product, device) for _ in range(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_800_000, help="catalogue size (default: 1,800,000, OTTO's)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("-k", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=50, help="single sessions timed for the latency percentiles")
    parser.add_argument("--batch-sizes", default="64,128,256,512,1024")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per batch size (the median counts)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's choice); on a busy machine 1 can beat 2 for single sessions")
    parser.add_argument("--floor-memory", type=int, default=2 << 30, help="bytes of output the floor's product may hold at once")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    config = SASRecConfig(hidden_size=200, num_layers=2, max_length=50)
    model = SASRec(config, n_items=args.items).eval().to(device)
    table = model.output_table().detach()[1:]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"SASRec d={config.hidden_size}, {config.num_layers} layers, max_length {config.max_length}, {args.items:,} items, k={args.k}, on {name}")

    with torch.no_grad():
        # single sessions, one at a time, after a warm-up
        one = [sessions(args.items, 1, config.max_length, generator).to(device) for _ in range(args.sessions + 5)]
        timings = [timed(lambda window=window: score_sessions(Scorer(model), window, args.k), device) for window in one]
        latency = np.array(timings[5:]) * 1000
        floor_one = floor_seconds(model.last_hidden(one[0]), table, args.floor_memory, device) * 1000

        flop = 2 * config.hidden_size * args.items  # of the scores of one session; the transformer adds little
        median = float(np.median(latency)) / 1000
        rows = [
            [
                "1 (latency)",
                f"p50 {np.percentile(latency, 50):,.1f} ms, p99 {np.percentile(latency, 99):,.1f} ms",
                f"{1 / median:,.1f}",
                f"{flop / median / 1e9:,.1f}",
                f"{floor_one:,.1f} ms",
                f"{median * 1000 / floor_one:.2f}x",
            ]
        ]
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            windows = sessions(args.items, batch, config.max_length, generator).to(device)
            score_sessions(Scorer(model), windows, args.k)  # warm-up
            seconds = float(np.median([timed(lambda windows=windows: score_sessions(Scorer(model), windows, args.k), device) for _ in range(args.repeats)]))
            floor = floor_seconds(model.last_hidden(windows), table, args.floor_memory, device)
            rows.append(
                [
                    str(batch),
                    f"{seconds * 1000:,.0f} ms per batch",
                    f"{batch / seconds:,.0f}",
                    f"{batch * flop / seconds / 1e9:,.1f}",
                    f"{floor * 1000:,.0f} ms",
                    f"{seconds / floor:.2f}x",
                ]
            )

    header = ["sessions", "scoring core (median)", "sessions/s", "GFLOP/s", "matmul floor", "core / floor"]
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    print(
        f"The floor is hidden @ table.T alone ({flop / 1e9:.2f} GFLOP and {args.items * config.hidden_size * 4 / 1e9:.2f} GB of table read per session), "
        f"in row blocks of at most {args.floor_memory / 1e9:.1f} GB of output; the core adds the transformer, the bias, chunking and the running top-{args.k}."
    )


if __name__ == "__main__":
    main()
