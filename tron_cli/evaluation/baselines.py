"""Baselines that need no training, declared in the `BASELINES` registry with their options, ranked exactly.

- `popular`: score = train clicks of the item;
- `markov`: score = (train transitions from the session's previous click to the item, train clicks), the
  transition count first and popularity breaking its ties;
- `sknn`: session-based kNN (Jannach & Ludewig, RecSys 2017): among the `sample_size` most recent train
  sessions that share an item with the session so far, the `k` most similar by cosine similarity of their
  item sets; an item scores the summed similarity of the neighbours that contain it;
- `vsknn`: the same with the session's items weighted by recency (Ludewig & Jannach, UMUAI 2018): the i-th
  most recent click weighs 1/i (`decay div`) or 1 - 0.1 (i - 1), at least 0.1 (`decay linear`), and the
  similarity is the weighted overlap.

Every baseline scores an item as `base[item] + bonus[row, item]`, with an integer or float `base` over the
catalogue (popularity, or zero) and a sparse `bonus` per target row (transitions, or neighbour votes). A
target's rank is then counted exactly without any (rows x catalogue) score matrix: the items whose base beats
the target's score come from the sorted bases (a binary search), corrected by the few items of the row that
carry a bonus or are excluded. The kNN neighbourhoods (`inference/knn.py`, which the scorer blends too) are
sparse products over the session x item incidence of the train split, all tensor operations on the evaluation
device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tron_cli.artifacts.sessions import Dataset
from tron_cli.batching import SessionStore, owned_ranges
from tron_cli.errors import UsageError
from tron_cli.evaluation.metrics import Accumulator
from tron_cli.evaluation.procedures import EvalOptions, finish, ordered_at, query_batch, seen_pairs
from tron_cli.inference.blends import Bonus, Context
from tron_cli.inference.knn import Neighbours
from tron_cli.inference.scoring import Pairs
from tron_cli.inference.transitions import count_pairs
from tron_cli.options import Option
from tron_cli.registry import Registry
from tron_cli.reporting import SILENT, Reporter

# scorer(store, positions (Q,)) -> the rows' bonuses over the base
Scorer = Callable[[SessionStore, Tensor], Bonus]


@dataclass(frozen=True)
class Prepared:
    base: Tensor  # (N+1,) score of every item before any bonus, by dense id (row 0 unused)
    scorer: Scorer


@dataclass(frozen=True)
class Baseline:
    name: str
    summary: str  # one line for --help and docs
    prepare: Callable[[Dataset, torch.device, Mapping[str, Any]], Prepared]
    options: tuple[Option, ...] = ()

    def resolve(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """This baseline's option values: the given ones over the defaults, each checked; unknown names refused."""
        known = {option.name for option in self.options}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(
                f"--baseline-option {unknown[0]} is not an option of baseline {self.name}",
                f"Its options: {', '.join(sorted(known))}" if known else "It takes none",
            )
        out = {option.name: values.get(option.name, option.default) for option in self.options}
        for option in self.options:
            if not option.valid(out[option.name]):
                raise UsageError(f"--baseline-option {option.name} {option.requirement}")
        return out


BASELINES: Registry[Baseline] = Registry("baseline")


# ------------------------------------------------------------------------------------------------ exact ranks


def _keys(rows: Tensor, items: Tensor, n_items: int) -> Tensor:
    return rows * (n_items + 1) + items


def _lookup(keys: Tensor, values: Tensor, query: Tensor) -> Tensor:
    """values[keys == query], or 0 where `query` is not among the sorted `keys`."""
    if len(keys) == 0:
        return torch.zeros(query.shape, dtype=values.dtype, device=query.device)
    found = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
    return torch.where(keys[found] == query, values[found], torch.zeros((), dtype=values.dtype, device=query.device))


def _count(rows: Tensor, items: Tensor, scores: Tensor, targets: Tensor, target_score: Tensor) -> tuple[Tensor, Tensor]:
    """(above, tying) (Q,): per row, how many of the given (row, item) scores beat or tie the row's target
    score, its own target left out."""
    other = items != targets[rows]
    reference = target_score[rows]
    zeros = torch.zeros(len(targets), dtype=torch.long, device=targets.device)
    above = zeros.index_add(0, rows, ((scores > reference) & other).long())
    tying = zeros.index_add(0, rows, ((scores == reference) & other).long())
    return above, tying


def rank_by_counting(base: Tensor, sorted_base: Tensor, bonus: Bonus, targets: Tensor, ties: str, excluded: Pairs | None) -> Tensor:
    """(Q,) float64 ranks of `targets` among items 1..N scored `base + bonus`, as `scoring.rank_targets`
    ranks them (items tying with the target count by `ties`; excluded items removed; an excluded target is a
    miss), counted in O(Q log N + bonus + excluded) without a score matrix. `sorted_base` = sort(base[1:])."""
    q, n_items = len(targets), len(base) - 1
    rows = torch.arange(q, device=targets.device)
    keys = _keys(bonus.rows, bonus.items, n_items)
    order = torch.argsort(keys)
    keys, values = keys[order], bonus.values[order]
    target_score = base[targets] + _lookup(keys, values, _keys(rows, targets, n_items))  # (Q,)
    # every item by its base (a binary search in the sorted bases), less the target itself ...
    high = torch.searchsorted(sorted_base, target_score, right=True)
    above = n_items - high - (base[targets] > target_score).long()
    tying = high - torch.searchsorted(sorted_base, target_score, right=False) - (base[targets] == target_score).long()
    # ... then the items with a bonus counted by their full score instead of their base ...
    bonus_rows, bonus_items = keys // (n_items + 1), keys % (n_items + 1)
    by_base = _count(bonus_rows, bonus_items, scores=base[bonus_items], targets=targets, target_score=target_score)
    by_score = _count(bonus_rows, bonus_items, scores=base[bonus_items] + values, targets=targets, target_score=target_score)
    above, tying = above - by_base[0] + by_score[0], tying - by_base[1] + by_score[1]
    # ... and the excluded items (a session's own clicks, each once) not at all
    miss = torch.zeros(q, dtype=torch.bool, device=targets.device)
    if excluded is not None:
        unique = torch.unique(_keys(excluded[0], excluded[1], n_items))
        ex_rows, ex_items = unique // (n_items + 1), unique % (n_items + 1)
        removed = _count(ex_rows, ex_items, scores=base[ex_items] + _lookup(keys, values, unique), targets=targets, target_score=target_score)
        above, tying = above - removed[0], tying - removed[1]
        miss[ex_rows[ex_items == targets[ex_rows]]] = True
    if ties == "optimistic":
        ranks = above.double()
    elif ties == "pessimistic":
        ranks = (above + tying).double()
    else:
        ranks = above.double() + 0.5 * tying.double()
    return torch.where(miss, torch.full_like(ranks, math.inf), ranks)


# ------------------------------------------------------------------------------------------------ popular and markov


def _popularity(dataset: Dataset, device: torch.device) -> Tensor:
    counts = torch.from_numpy(np.array(dataset.items().column("count"), dtype=np.int64).copy()).to(device)
    return torch.cat([torch.zeros(1, dtype=torch.int64, device=device), counts])  # (N+1,), index = dense id


def popular(dataset: Dataset, device: torch.device, options: Mapping[str, Any]) -> Prepared:
    return Prepared(_popularity(dataset, device), lambda store, positions: Bonus.empty(device, torch.int64))


def markov(dataset: Dataset, device: torch.device, options: Mapping[str, Any]) -> Prepared:
    popularity = _popularity(dataset, device)
    n = dataset.n_items
    keys, transition_counts = (t.to(device) for t in count_pairs(dataset.sessions("train"), n))  # sorted (prev, next) pairs
    weight = int(popularity.max()) + 1  # transitions first, popularity breaks ties: exact in int64

    def scorer(store: SessionStore, positions: Tensor) -> Bonus:
        previous = store.items[positions - 1]
        # every transition out of each row's previous click
        lo = torch.searchsorted(keys, previous * (n + 1))
        hi = torch.searchsorted(keys, previous * (n + 1) + n + 1)
        rows, entry = owned_ranges(lo, hi - lo)
        return Bonus(rows, keys[entry] % (n + 1), transition_counts[entry] * weight)

    return Prepared(popularity, scorer)


# ------------------------------------------------------------------------------------------------ session kNN


def _knn(dataset: Dataset, device: torch.device, options: Mapping[str, Any], decay: str | None) -> Prepared:
    neighbours = Neighbours.counted(dataset.sessions("train"), dataset.n_items, device, k=int(options["k"]), sample_size=int(options["sample_size"]))
    return Prepared(
        torch.zeros(dataset.n_items + 1, dtype=torch.float64, device=device),
        lambda store, positions: neighbours.votes(Context.of_positions(store, positions), decay),
    )


def sknn(dataset: Dataset, device: torch.device, options: Mapping[str, Any]) -> Prepared:
    return _knn(dataset, device, options, None)


def vsknn(dataset: Dataset, device: torch.device, options: Mapping[str, Any]) -> Prepared:
    return _knn(dataset, device, options, str(options["decay"]))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


KNN_OPTIONS = (
    Option("k", 100, help="Neighbours: the most similar train sessions that vote.", valid=_positive_int, requirement="must be an integer >= 1"),
    Option(
        "sample_size",
        500,
        help="Candidates: the most recent train sessions sharing an item with the session.",
        valid=_positive_int,
        requirement="must be an integer >= 1",
    ),
)

BASELINES.register("popular", Baseline("popular", "the most clicked items in train", popular))
BASELINES.register("markov", Baseline("markov", "first-order transitions from the previous click, ties by popularity", markov))
BASELINES.register("sknn", Baseline("sknn", "session-based kNN: summed cosine similarity of recent train sessions sharing items", sknn, KNN_OPTIONS))
BASELINES.register(
    "vsknn",
    Baseline(
        "vsknn",
        "session-based kNN with the session's clicks weighted by recency",
        vsknn,
        (
            *KNN_OPTIONS,
            Option(
                "decay",
                "div",
                help="Weight of the i-th most recent click: div (1/i) or linear (1 - 0.1 (i - 1)).",
                valid=lambda v: v in ("div", "linear"),
                requirement="must be div or linear",
            ),
        ),
    ),
)


@torch.no_grad()
def evaluate_baseline(
    name: str,
    dataset: Dataset,
    store: SessionStore,
    last_only: bool,
    options: EvalOptions,
    report: Reporter = SILENT,
    baseline_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics of baseline `name` (with its `baseline_options`) on the sessions in `store` (protocol all)."""
    baseline = BASELINES.get(name, "--baseline")
    resolved = baseline.resolve(baseline_options or {})
    if options.protocol != "all":
        raise UsageError("baselines are evaluated with --protocol all")
    device = store.device
    prepared = baseline.prepare(dataset, device, resolved)
    sorted_base = torch.sort(prepared.base[1:]).values
    positions = store.target_positions(last_only)
    sessions = store.session_of(positions)
    accumulator = Accumulator(len(store), options.cutoffs, device, orders=store.ordered is not None)
    step = query_batch(options, device)
    with report.task(f"evaluating the {name} baseline", total=len(positions)) as task:
        for first in range(0, len(positions), step):
            chunk = positions[first : first + step]
            excluded = seen_pairs(store, chunk) if options.exclude_seen else None
            ranks = rank_by_counting(
                prepared.base, sorted_base, bonus=prepared.scorer(store, chunk), targets=store.items[chunk], ties=options.ties, excluded=excluded
            )
            accumulator.add(ranks, sessions[first : first + step], ordered_at(store, chunk))
            task.update(advance=len(chunk))
    return finish(accumulator, options)
