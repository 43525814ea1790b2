"""Scoring the whole catalogue in chunks: the top-k items of a state, and the rank of a target with a tie policy.

Both walk the items 1..N in chunks of columns, so that at most (rows x chunk) scores exist at once whatever
the catalogue's size, and both remove `excluded` (row, item) pairs (a session's own clicks) the same way;
`top_k` also removes `banned` items from every row (a deny list). `top_among` scores only a given subset of the
catalogue (an allow list), which costs that subset's size instead of the catalogue's.
Scores are fp32 and exact (TF32 off, `runtime.exact_fp32`): rounded scores would create artificial ties.
A rank is a count of comparisons, never a sort: the rank of a target (0 = first) counts the items that score
higher than it; items that tie with it count fully (pessimistic), not at all (optimistic) or half (average).
Shared by validation, `tron evaluate`, `tron recommend`, `tron export` and the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from tron_cli.inference.blends import Context
from tron_cli.inference.scorer import Scorer
from tron_cli.runtime import exact_fp32

# scores held at once (rows x catalogue chunk) by `top_items`, 64 MB on CPU and 256 MB on CUDA: memory stays
# bounded whatever the catalogue, and each chunk's product is still large enough to run at full speed
SCORE_BUDGET = {"cpu": 1 << 24, "cuda": 1 << 26}

# scores a rank counts over at once (rows x chunk) on a CPU: 2 MB, so that each chunk's scores are still in the
# cache when they are compared with the targets' (one pass over memory instead of three; 2.5x on 2 cores at 50k
# items, BENCHMARKS.md "Evaluation"); a GPU's kernels stream at full speed either way and keep the chunk asked for
RANK_BUDGET = {"cpu": 1 << 19}

# score_chunk(start, stop) -> (Q, stop - start) fp32 scores of items start..stop-1 for the current rows
ChunkScorer = Callable[[int, int], Tensor]
Pairs = tuple[Tensor, Tensor]  # (rows, items) of a batch of rows


def masked_chunks(
    score_chunk: ChunkScorer,
    n_items: int,
    chunk_size: int,
    excluded: Pairs | None = None,
    own: Tensor | None = None,
    banned: Tensor | None = None,
    nan_to_worst: bool = True,
) -> Iterator[tuple[int, Tensor]]:
    """(start, scores (Q, C)) of items start..start+C-1, chunk by chunk, with the `excluded` pairs, each row's
    `own` item (Q,) and the `banned` items ((N + 1,) bool, every row) set to -inf, and so is a NaN score unless
    `nan_to_worst` is off (the worst possible: a NaN compares false, so it would otherwise lead a top-k; a rank, which
    only counts comparisons, needs no such pass). Pairs are removed by adding -inf (or 0 outside the chunk): no
    boolean indexing, so nothing waits for the device."""
    for start in range(1, n_items + 1, chunk_size):
        stop = min(start + chunk_size, n_items + 1)
        scores = score_chunk(start, stop).contiguous()
        if nan_to_worst:
            scores.masked_fill_(scores.isnan(), float("-inf"))
        if banned is not None:
            scores.masked_fill_(banned[start:stop], float("-inf"))
        if own is not None:
            _remove(scores, torch.arange(own.shape[0], device=own.device), items=own, start=start, stop=stop)
        if excluded is not None:
            _remove(scores, *excluded, start, stop)
        yield start, scores


def _remove(scores: Tensor, rows: Tensor, items: Tensor, start: int, stop: int) -> None:
    """Set scores[row, item - start] to -inf for the (row, item) pairs with start <= item < stop."""
    width = stop - start
    inside = (items >= start) & (items < stop)
    flat = rows * width + (items - start).clamp(0, width - 1)
    scores.view(-1).scatter_add_(0, flat, torch.where(inside, float("-inf"), 0.0).to(scores.dtype))


def ranks_from_scores(scores: Tensor, target_scores: Tensor, ties: str = "pessimistic") -> Tensor:
    """(Q,) ranks of targets from (Q, N) scores of the *other* items (the target's own column already removed)."""
    target = target_scores[:, None]
    if ties == "optimistic":
        return (scores > target).sum(1).double()
    if ties == "pessimistic":
        return (scores >= target).sum(1).double()
    return (scores > target).sum(1).double() + 0.5 * (scores == target).sum(1).double()


def rank_chunk(chunk_size: int, rows: int, device: torch.device) -> int:
    """The chunk of items to rank `rows` targets over: `chunk_size`, or fewer on a CPU (`RANK_BUDGET`)."""
    budget = RANK_BUDGET.get(device.type)
    return chunk_size if budget is None else max(1, min(chunk_size, budget // max(1, rows)))


def rank_targets(
    score_chunk: ChunkScorer,
    target_scores: Tensor,
    targets: Tensor,
    n_items: int,
    chunk_size: int = 65536,
    ties: str = "pessimistic",
    excluded: Pairs | None = None,
) -> Tensor:
    """(Q,) rank of each target among items 1..n_items (padding 0 excluded), scored chunk by chunk.

    A target that is itself excluded gets rank inf (a miss). The target's own column is always removed, so its
    score is compared only with the other items.
    """
    ranks = torch.zeros(targets.shape[0], dtype=torch.float64, device=targets.device)
    # NaN scores stay: `>`, `>=` and `==` are false for them, so a NaN item never outranks or ties a target
    for _, scores in masked_chunks(score_chunk, n_items, chunk_size, excluded, own=targets, nan_to_worst=False):
        ranks += ranks_from_scores(scores, target_scores, ties)
    ranks = torch.where(target_scores.isnan(), float(n_items), ranks)  # a NaN target ranks last: no metric gains from it
    if excluded is not None:
        ex_rows, ex_items = excluded
        seen_target = torch.zeros(targets.shape[0], dtype=torch.float64, device=targets.device).scatter_add_(
            0, ex_rows, (ex_items == targets.index_select(0, ex_rows)).double()
        )
        ranks = torch.where(seen_target > 0, float("inf"), ranks)
    return ranks


def top_k(
    score_chunk: ChunkScorer, n_items: int, k: int, chunk_size: int, excluded: Pairs | None = None, banned: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(scores (Q, k) best first, item ids (Q, k)) among items 1..n_items, merged chunk by chunk into a running
    top-k. With fewer than k items left after the exclusions, the last ones of a row are -inf."""
    k = min(k, n_items)
    best: tuple[Tensor, Tensor] | None = None
    for start, scores in masked_chunks(score_chunk, n_items, chunk_size, excluded, banned=banned):
        values, index = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        index = index + start
        if best is not None:
            values, merged = torch.topk(torch.cat([best[0], values], 1), k, dim=1)
            index = torch.gather(torch.cat([best[1], index], 1), 1, merged)
        best = values, index
    if best is None:
        raise ValueError("top_k of an empty catalogue")
    return best


def _chunk(k: int, rows: int, device: torch.device, budget: int | None) -> int:
    budget = budget or SCORE_BUDGET.get(device.type, SCORE_BUDGET["cpu"])
    return max(k, budget // max(1, rows))


def top_items(
    scorer: Scorer,
    hidden: Tensor,
    k: int,
    excluded: Pairs | None = None,
    budget: int | None = None,
    banned: Tensor | None = None,
    context: Context | None = None,
) -> tuple[Tensor, Tensor]:
    """(scores (Q, k) fp32 best first, dense ids (Q, k)) of the scorer's catalogue for each state (Q, d); `context`:
    each row's session, which the scorer's blends read (their bonus is computed once, not per chunk)."""
    chunk = _chunk(k, hidden.shape[0], hidden.device, budget)
    with exact_fp32():
        return top_k(scorer.chunk(hidden, scorer.bonus(context)), scorer.n_items, k=k, chunk_size=chunk, excluded=excluded, banned=banned)


def top_among(
    scorer: Scorer, hidden: Tensor, k: int, items: Tensor, excluded: Pairs | None = None, budget: int | None = None, context: Context | None = None
) -> tuple[Tensor, Tensor]:
    """(scores (Q, k) fp32 best first, dense ids (Q, k)) among `items` (M,) sorted distinct dense ids only.

    The same scores as `top_items` (h · W[item] + b[item] in fp32, plus the scorer's blends of each row's `context`);
    rows with fewer than k items left end in -inf (their ids are then meaningless)."""
    if len(items) == 0:
        q = hidden.shape[0]
        return torch.full((q, 0), float("-inf"), device=hidden.device), torch.zeros((q, 0), dtype=torch.long, device=hidden.device)
    position_excluded = None
    if excluded is not None:  # (row, item) pairs -> (row, position in `items`) for the items of the subset
        rows, excluded_items = excluded
        position = torch.searchsorted(items, excluded_items).clamp(max=len(items) - 1)
        inside = items[position] == excluded_items
        position_excluded = (rows[inside], position[inside] + 1)  # positions 1..M, as `top_k` counts items

    states, bonus = hidden.float(), scorer.bonus(context)  # once, not per chunk

    def score_chunk(start: int, stop: int) -> Tensor:
        return scorer.subset(states, items[start - 1 : stop - 1], bonus)

    chunk = _chunk(k, hidden.shape[0], hidden.device, budget)
    with exact_fp32():
        scores, positions = top_k(score_chunk, len(items), k=k, chunk_size=chunk, excluded=position_excluded)
    return scores, items[positions - 1]


@torch.no_grad()
def score_sessions(
    scorer: Scorer, windows: Tensor, k: int, excluded: Pairs | None = None, budget: int | None = None, preference: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(B, T) left-padded windows of dense ids -> (scores (B, k), dense ids (B, k)): what `tron recommend` answers.
    `preference` (B, 2): each row's [click weight, order weight], for a model with a preference input."""
    model = scorer.model
    hidden = model.last_hidden(windows) if preference is None else model.last_hidden(windows, preference)
    return top_items(scorer, hidden, k=k, excluded=excluded, budget=budget, context=Context.of_windows(windows) if scorer.blends else None)
