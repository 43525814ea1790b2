"""The metrics of many weightings of a scorer's blends on one split, from one pass over its targets.

A grid point weights each blend's part (`inference/blends.py`: unweighted, one `Bonus` per part) and scores
`network + sum of weight x part`, exactly as a `Scorer` with those weights ranks (the weighted parts summed in
float64 and rounded to fp32 once, then added to the fp32 network score). The network's scores of a batch of
targets are computed once; every grid point's ranks are then counted without another pass over the catalogue:
the few items of a row that a blend names (and the target) by their full score, every other item by its network
score alone, of which only the row's best `cutoff` can put a target out of the top `cutoff` (a metric at a
cutoff needs a rank only below it). Ties count against the target (pessimistic), as `tron evaluate` counts
them; exclusions are not supported (a grid is chosen with the session's own clicks in the ranking).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from tron_cli.batching import SessionStore
from tron_cli.evaluation.procedures import EvalOptions, target_states
from tron_cli.inference.blends import Bonus, Context
from tron_cli.inference.scoring import SCORE_BUDGET
from tron_cli.reporting import SILENT, Reporter
from tron_cli.runtime import exact_fp32

# parts(context) -> {part name: unweighted Bonus} for the rows of a context
Parts = Callable[[Context], dict[str, Bonus]]
POINTS_AT_ONCE = 1 << 23  # (sparse entries x grid points) compared at once: memory stays bounded whatever the grid


def ranks_of_points(dense: Tensor, targets: Tensor, parts: dict[str, Bonus], names: Sequence[str], weights: Tensor, cutoff: int) -> Tensor:
    """(Q, G) pessimistic ranks (0 = first) of `targets` (Q,) at each of the G weightings `weights` (G, P) of the
    parts `names` (P), the network's scores `dense` (Q, N) of items 1..N; a rank of `cutoff` or more is only known
    to be at least `cutoff` (a miss at every cutoff asked for)."""
    q, n = dense.shape
    device = dense.device
    rows_q = torch.arange(q, device=device)
    # every (row, item) that a part names, and each row's target, once, with each part's value (0 where absent)
    keys = [rows_q * (n + 1) + targets] + [parts[name].rows * (n + 1) + parts[name].items for name in names]
    unique, inverse = torch.unique(torch.cat(keys), return_inverse=True)
    values = torch.zeros(len(unique), len(names), dtype=torch.float64, device=device)
    start = q
    for column, name in enumerate(names):
        count = len(parts[name].rows)
        values[:, column].index_add_(0, inverse[start : start + count], parts[name].values.double())
        start += count
    rows, items = unique // (n + 1), unique % (n + 1)
    base = dense[rows, items - 1]  # (U,) fp32
    target_entry = inverse[:q]  # (Q,) the target's entry in each row
    # the items no part names keep their network score: only the `cutoff` best of them can decide a hit
    others = dense.index_put((rows, items - 1), torch.full_like(base, float("-inf")))
    best_others = torch.topk(others, min(cutoff, n), dim=1).values  # (Q, C)
    ranks = []
    step = max(1, POINTS_AT_ONCE // max(1, len(unique) + q * cutoff))
    for first in range(0, len(weights), step):
        w = weights[first : first + step]  # (G', P)
        full = base[:, None] + (values @ w.T.double()).float()  # (U, G') fp32, as the scorer adds its bonus
        target = full[target_entry]  # (Q, G')
        above_others = (best_others[:, None, :] >= target[:, :, None]).sum(2)  # (Q, G'), `cutoff` at most
        above_named = torch.zeros_like(above_others).index_add_(0, rows, (full >= target[rows]).long())
        ranks.append(above_others + above_named - 1)  # the target counts itself among the named once
    return torch.cat(ranks, 1)


@torch.no_grad()
def grid_metrics(
    model,
    store: SessionStore,
    last_only: bool,
    parts_of: Parts,
    names: Sequence[str],
    weights: Tensor,
    terms: Sequence[tuple[str, int]],
    options: EvalOptions | None = None,
    report: Reporter = SILENT,
) -> tuple[Tensor, int]:
    """(values (G, len(terms)) float64, targets): each (metric, cutoff) of `terms` (recall, mrr or ndcg), micro-averaged
    over every target of `store` (only each session's last with `last_only`), at each weighting `weights` (G, P) of the parts `names` that `parts_of` gives."""
    totals = torch.zeros(len(weights), len(terms), dtype=torch.float64)
    n_targets = 0
    n = model.n_items
    cutoff = max(k for _, k in terms)
    with exact_fp32():
        for hidden, targets, _, positions in target_states(model, store, last_only=last_only, options=options or EvalOptions(), report=report):
            # rows of at most a budget of scores each: the (rows x catalogue) matrix and its sorted copy stay bounded
            step = max(1, SCORE_BUDGET.get(hidden.device.type, SCORE_BUDGET["cpu"]) // n)
            for first in range(0, len(targets), step):
                chunk = slice(first, first + step)
                dense = model.score_all(hidden[chunk].float())
                parts = parts_of(Context.of_positions(store, positions[chunk]))
                ranks = ranks_of_points(dense, targets[chunk], parts, names, weights=weights.to(dense.device), cutoff=cutoff).double()
                for column, (metric, cutoff) in enumerate(terms):
                    hit = ranks < cutoff
                    gain = {"recall": torch.ones_like(ranks), "mrr": 1.0 / (ranks + 1), "ndcg": 1.0 / torch.log2(ranks + 2)}[metric]
                    totals[:, column] += torch.where(hit, gain, 0.0).sum(0).cpu()
            n_targets += len(targets)
    return totals / max(1, n_targets), n_targets
