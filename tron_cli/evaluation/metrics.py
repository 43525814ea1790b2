"""The metrics built on full-catalogue ranks (`scoring.rank_targets`): Recall@k (= HitRate@k), MRR@k, NDCG@k,
summed per session so that a bootstrap can resample sessions. Shared by `tron evaluate` and validation. Also
the hypervolume of a MultiTRON front, which picks a MultiTRON run's checkpoint and summarises `tron pareto`.
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
    """Sums of per-target metric values, kept per session so that a bootstrap can resample sessions.

    With `orders`, each target also says whether its item is ordered later in the session, and the sums give
    MultiTRON's order metrics at each cutoff k, as global ratios (not means of batch ratios):
    order_recall@k = ordered targets in the top k / ordered targets, order_density@k = ordered targets in the
    top k / targets in the top k."""

    def __init__(self, n_sessions: int, cutoffs: Iterable[int], device: torch.device, orders: bool = False):
        self.cutoffs = tuple(sorted(set(cutoffs)))
        self.names = [f"{m}@{k}" for k in self.cutoffs for m in METRICS]
        self.sums = torch.zeros(n_sessions, len(self.names), dtype=torch.float64, device=device)
        self.counts = torch.zeros(n_sessions, dtype=torch.float64, device=device)
        # per session: ordered hits at each cutoff, hits at each cutoff, ordered targets
        self.orders = torch.zeros(n_sessions, 2 * len(self.cutoffs) + 1, dtype=torch.float64, device=device) if orders else None

    def add(self, ranks: Tensor, sessions: Tensor, ordered: Tensor | None = None) -> None:
        values = metric_values(ranks, self.cutoffs)
        self.sums.index_add_(0, sessions, torch.stack([values[name] for name in self.names], 1))
        self.counts.index_add_(0, sessions, torch.ones_like(ranks))
        if self.orders is not None and ordered is not None:
            hits = torch.stack([values[f"recall@{k}"] for k in self.cutoffs], 1)  # (Q, C)
            labels = ordered.to(hits.dtype)[:, None]  # (Q, 1)
            self.orders.index_add_(0, sessions, torch.cat([hits * labels, hits, labels], 1))

    def _values(self, weights: Tensor) -> Tensor:
        """Every metric from the sums of sessions weighted by `weights` (S,)."""
        values = (weights @ self.sums) / (weights @ self.counts).clamp(min=1.0)
        if self.orders is None:
            return values
        c = len(self.cutoffs)
        totals = weights @ self.orders
        recall = totals[:c] / totals[-1].clamp(min=1.0)
        density = totals[:c] / totals[c : 2 * c].clamp(min=1.0)
        return torch.cat([values, recall, density])

    @property
    def all_names(self) -> list[str]:
        if self.orders is None:
            return self.names
        return [*self.names, *(f"order_recall@{k}" for k in self.cutoffs), *(f"order_density@{k}" for k in self.cutoffs)]

    def result(self) -> dict[str, float]:
        """Exact micro-averages over all targets (and the order ratios), plus n_targets (and n_ordered)."""
        out: dict[str, float] = dict(zip(self.all_names, self._values(torch.ones_like(self.counts)).tolist()))
        out["n_targets"] = int(float(self.counts.sum()))
        if self.orders is not None:
            out["n_ordered"] = int(float(self.orders[:, -1].sum()))
        return out

    def bootstrap(self, replicates: int, seed: int = 0, level: float = 0.95) -> dict[str, float]:
        """`level` percentile intervals from resampling sessions with replacement: `<metric>_low`/`_high`."""
        generator = torch.Generator(device=self.sums.device).manual_seed(seed)
        n = self.sums.shape[0]
        names = self.all_names
        estimates = torch.empty(replicates, len(names), dtype=torch.float64, device=self.sums.device)
        for r in range(replicates):
            weights = torch.bincount(torch.randint(0, n, (n,), generator=generator, device=self.sums.device), minlength=n).double()
            estimates[r] = self._values(weights)
        low = torch.quantile(estimates, (1 - level) / 2, dim=0).tolist()
        high = torch.quantile(estimates, 1 - (1 - level) / 2, dim=0).tolist()
        out = {}
        for name, lo, hi in zip(names, low, high):
            out[f"{name}_low"], out[f"{name}_high"] = lo, hi
        return out


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float] = (0.0, 0.0)) -> float:
    """Area dominated by `points` (both coordinates maximised) and bounded below by `reference`: the union of
    the rectangles [reference, point]. Points not above the reference in both coordinates add nothing."""
    kept = sorted(((x, y) for x, y in points if x > reference[0] and y > reference[1]), reverse=True)
    area, height = 0.0, reference[1]
    for x, y in kept:  # by x descending: each point adds the strip above the best y seen so far
        if y > height:
            area += (x - reference[0]) * (y - height)
            height = y
    return area
