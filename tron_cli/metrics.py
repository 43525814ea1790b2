"""Full-catalogue ranks and the metrics built on them: Recall@k (= HitRate@k), MRR@k, NDCG@k.

The rank of a target (0 = first) counts the catalogue items that score higher than it; items that tie with
it count fully (pessimistic), not at all (optimistic) or half (average). Scores are fp32 and computed in
chunks of items, so memory is bounded and nothing is ever sorted: a rank is a count of comparisons.
Shared by `tron evaluate` and training's per-epoch validation.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor

TIES = ("pessimistic", "optimistic", "average")
METRICS = ("recall", "mrr", "ndcg")

# score_chunk(start, stop) -> (Q, stop - start) fp32 scores of items start..stop-1 for the current queries
ChunkScorer = Callable[[int, int], Tensor]


def ranks_from_scores(scores: Tensor, target_scores: Tensor, ties: str = "pessimistic") -> Tensor:
    """(Q,) ranks of targets from (Q, N) scores of the *other* items (the target's own column already removed)."""
    target = target_scores[:, None]
    if ties == "optimistic":
        return (scores > target).sum(1).double()
    if ties == "pessimistic":
        return (scores >= target).sum(1).double()
    return (scores > target).sum(1).double() + 0.5 * (scores == target).sum(1).double()


def rank_targets(
    score_chunk: ChunkScorer,
    target_scores: Tensor,
    targets: Tensor,
    n_items: int,
    chunk_size: int = 65536,
    ties: str = "pessimistic",
    excluded: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """(Q,) rank of each target among items 1..n_items (padding 0 excluded), scored chunk by chunk.

    `excluded` = (rows, items): pairs of (query, item) removed from the ranking (items seen in the session).
    A target that is itself excluded gets rank inf (a miss). The target's own column is always removed, so
    its score is compared only with the other items.
    """
    q = targets.shape[0]
    ranks = torch.zeros(q, dtype=torch.float64, device=targets.device)
    rows = torch.arange(q, device=targets.device)
    for start in range(1, n_items + 1, chunk_size):
        stop = min(start + chunk_size, n_items + 1)
        scores = score_chunk(start, stop)  # (Q, C)
        inside = (targets >= start) & (targets < stop)
        scores[rows[inside], targets[inside] - start] = float("-inf")
        if excluded is not None:
            ex_rows, ex_items = excluded
            hit = (ex_items >= start) & (ex_items < stop)
            scores[ex_rows[hit], ex_items[hit] - start] = float("-inf")
        ranks += ranks_from_scores(scores, target_scores, ties)
    if excluded is not None:
        ex_rows, ex_items = excluded
        seen_target = torch.zeros(q, dtype=torch.bool, device=targets.device)
        seen_target[ex_rows[ex_items == targets[ex_rows]]] = True
        ranks[seen_target] = float("inf")
    return ranks


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

    def merge(self, other: "Accumulator") -> None:
        self.sums += other.sums
        self.counts += other.counts

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
