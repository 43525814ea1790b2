"""The metrics built on full-catalogue ranks (`scoring.rank_targets`): Recall@k (= HitRate@k), MRR@k, NDCG@k,
summed per session so that a bootstrap can resample sessions. Shared by `tron evaluate` and validation.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

METRICS = ("recall", "mrr", "ndcg")


def metric_values(ranks: Tensor, cutoffs: Iterable[int]) -> dict[str, Tensor]:
    """Per-target values: recall@k = [rank < k], mrr@k = 1/(rank+1) within k, ndcg@k = 1/log2(rank+2) within k."""
    out = {}
    for k in cutoffs:
        hit = ranks < k
        out[f"recall@{k}"] = hit.double()
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / (ranks + 1.0), torch.zeros_like(ranks))
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 2.0), torch.zeros_like(ranks))
    return out


class Accumulator:
    """Sums of per-target metric values, kept per session so that a bootstrap can resample sessions."""

    def __init__(self, n_sessions: int, cutoffs: Iterable[int], device: torch.device):
        self.cutoffs = tuple(sorted(set(cutoffs)))
        self.names = [f"{m}@{k}" for k in self.cutoffs for m in METRICS]
        self.sums = torch.zeros(n_sessions, len(self.names), dtype=torch.float64, device=device)
        self.counts = torch.zeros(n_sessions, dtype=torch.float64, device=device)

    def add(self, ranks: Tensor, sessions: Tensor) -> None:
        values = metric_values(ranks, self.cutoffs)
        self.sums.index_add_(0, sessions, torch.stack([values[name] for name in self.names], 1))
        self.counts.index_add_(0, sessions, torch.ones_like(ranks))

    def result(self) -> dict[str, float]:
        """Exact micro-averages over all targets, plus n_targets."""
        total = float(self.counts.sum())
        means = (self.sums.sum(0) / max(total, 1.0)).tolist()
        return {**dict(zip(self.names, means)), "n_targets": int(total)}

    def bootstrap(self, replicates: int, seed: int = 0, level: float = 0.95) -> dict[str, float]:
        """`level` percentile intervals from resampling sessions with replacement: `<metric>_low`/`_high`."""
        generator = torch.Generator(device=self.sums.device).manual_seed(seed)
        n = self.sums.shape[0]
        estimates = torch.empty(replicates, len(self.names), dtype=torch.float64, device=self.sums.device)
        for r in range(replicates):
            weights = torch.bincount(torch.randint(0, n, (n,), generator=generator, device=self.sums.device), minlength=n).double()
            estimates[r] = (weights @ self.sums) / (weights @ self.counts).clamp(min=1.0)
        low = torch.quantile(estimates, (1 - level) / 2, dim=0).tolist()
        high = torch.quantile(estimates, 1 - (1 - level) / 2, dim=0).tolist()
        out = {}
        for name, lo, hi in zip(self.names, low, high):
            out[f"{name}_low"], out[f"{name}_high"] = lo, hi
        return out
