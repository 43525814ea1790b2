"""The machine's own ceilings, measured by a benchmark when it starts: fp32 (and bf16) matrix throughput and memory
bandwidth.

A benchmark divides the arithmetic and memory traffic its work needs by these to get the floor of that work on
this machine, and prints floor / measured time as the fraction of the floor it reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from tron_cli.runtime import exact_fp32


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_seconds(work: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """The fastest of `repeats` runs of `work` after one warm-up."""
    work()
    sync(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        sync(device)
        times.append(time.perf_counter() - started)
    return min(times)


def machine_rates(device: torch.device, hidden: int = 200) -> tuple[float, float]:
    """(fp32 matrix FLOP/s, memory bytes/s) of `device`: the best of ten (1024 x d) by (d x 2048) products in a row,
    whose result stays in the caches, and of a 256 MB copy (its bytes read and written)."""
    a, b = torch.randn(1024, hidden, device=device), torch.randn(hidden, 2048, device=device)
    out = torch.empty(1024, 2048, device=device)

    def products() -> None:
        for _ in range(10):
            torch.mm(a, b, out=out)

    with exact_fp32():
        flops = 10 * 2 * 1024 * hidden * 2048 / best_seconds(products, device, repeats=5)
    source, target = torch.ones(1 << 26, device=device), torch.empty(1 << 26, device=device)
    bandwidth = 2 * source.numel() * 4 / best_seconds(lambda: target.copy_(source), device)
    return flops, bandwidth


def bf16_rate(device: torch.device, hidden: int = 200) -> float:
    """bf16 matrix FLOP/s of `device`, measured as `machine_rates` measures fp32's."""
    a, b = torch.randn(1024, hidden, device=device).bfloat16(), torch.randn(hidden, 2048, device=device).bfloat16()
    out = torch.empty(1024, 2048, device=device, dtype=torch.bfloat16)

    def products() -> None:
        for _ in range(10):
            torch.mm(a, b, out=out)

    return 10 * 2 * 1024 * hidden * 2048 / best_seconds(products, device, repeats=5)


def describe(flops: float, bandwidth: float) -> str:
    return f"fp32 matrix product {flops / 1e9:,.0f} GFLOP/s, memory copy {bandwidth / 1e9:,.1f} GB/s (measured now)"
