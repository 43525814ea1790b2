"""Baselines that need no training, declared in the `BASELINES` registry and ranked as models are.

- `popular`: score = train clicks of the item;
- `markov`: score = (train transitions from the session's previous click to the item, train clicks), the
  transition count first and popularity breaking its ties (exact in float64).

A baseline is prepared once from the dataset (`prepare(dataset, device)`), then asked for each chunk of
target positions of a `SessionStore` for a chunk scorer and the targets' own scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tron_cli.artifacts import Dataset
from tron_cli.batching import SessionStore
from tron_cli.errors import UsageError
from tron_cli.metrics import Accumulator
from tron_cli.protocols import EvalOptions, finish, query_batch, seen_pairs
from tron_cli.registry import Registry
from tron_cli.reporting import SILENT, Reporter
from tron_cli.scoring import ChunkScorer, rank_targets

# scorer(store, positions (Q,)) -> (score_chunk over catalogue columns, target scores (Q,))
Scorer = Callable[[SessionStore, Tensor], tuple[ChunkScorer, Tensor]]


@dataclass(frozen=True)
class Baseline:
    name: str
    summary: str  # one line for --help and docs
    prepare: Callable[[Dataset, torch.device], Scorer]


BASELINES: Registry[Baseline] = Registry("baseline")


def _popularity(dataset: Dataset, device: torch.device) -> Tensor:
    counts = torch.from_numpy(np.asarray(dataset.items().column("count"), dtype=np.float64)).to(device)
    return torch.cat([torch.zeros(1, dtype=torch.float64, device=device), counts])  # (N+1,), index = dense id


def popular(dataset: Dataset, device: torch.device) -> Scorer:
    popularity = _popularity(dataset, device)

    def scorer(store: SessionStore, positions: Tensor) -> tuple[ChunkScorer, Tensor]:
        q = len(positions)
        return (lambda a, b: popularity[a:b].expand(q, -1).clone()), popularity[store.items[positions]]

    return scorer


def markov(dataset: Dataset, device: torch.device) -> Scorer:
    popularity = _popularity(dataset, device)
    n = dataset.n_items
    train = dataset.sessions("train")
    flat = torch.from_numpy(train.items.astype(np.int64)).to(device)
    follows = torch.ones(len(flat), dtype=torch.bool, device=device)
    follows[torch.from_numpy(train.offsets[:-1]).to(device)] = False  # a session's first click follows nothing
    pair = flat[:-1][follows[1:]] * (n + 1) + flat[1:][follows[1:]]
    keys, transition_counts = torch.unique(pair, return_counts=True)  # sorted (prev, next) pairs
    weight = float(popularity.max()) + 1.0  # transitions first, popularity breaks ties: exact in float64

    def scorer(store: SessionStore, positions: Tensor) -> tuple[ChunkScorer, Tensor]:
        targets, previous = store.items[positions], store.items[positions - 1]
        q = len(positions)
        # every (row, next item, count) transition out of each row's previous click
        lo = torch.searchsorted(keys, previous * (n + 1))
        hi = torch.searchsorted(keys, previous * (n + 1) + n + 1)
        row_counts = hi - lo
        rows = torch.repeat_interleave(torch.arange(q, device=device), row_counts)
        ends = torch.cumsum(row_counts, 0)
        entry = lo[rows] + torch.arange(int(ends[-1]) if len(ends) else 0, device=device) - torch.repeat_interleave(ends - row_counts, row_counts)
        nexts, bonus = keys[entry] % (n + 1), transition_counts[entry].double() * weight
        key = previous * (n + 1) + targets
        found = torch.searchsorted(keys, key).clamp(max=len(keys) - 1)
        target_scores = popularity[targets] + torch.where(keys[found] == key, transition_counts[found].double() * weight, 0.0)

        def score_chunk(a: int, b: int) -> Tensor:
            scores = popularity[a:b].expand(q, -1).clone()
            inside = (nexts >= a) & (nexts < b)
            scores.index_put_((rows[inside], nexts[inside] - a), bonus[inside], accumulate=True)
            return scores

        return score_chunk, target_scores

    return scorer


BASELINES.register("popular", Baseline("popular", "the most clicked items in train", popular))
BASELINES.register("markov", Baseline("markov", "first-order transitions from the previous click, ties by popularity", markov))


@torch.no_grad()
def evaluate_baseline(name: str, dataset: Dataset, store: SessionStore, last_only: bool, options: EvalOptions, report: Reporter = SILENT) -> dict[str, Any]:
    """Metrics of baseline `name` on the sessions in `store` (protocol all)."""
    baseline = BASELINES.get(name, "--baseline")
    if options.protocol != "all":
        raise UsageError("baselines are evaluated with --protocol all")
    device = store.device
    scorer = baseline.prepare(dataset, device)
    positions = store.target_positions(last_only)
    sessions = store.session_of(positions)
    accumulator = Accumulator(len(store), options.cutoffs, device)
    step = query_batch(options, device)
    with report.task(f"evaluating the {name} baseline", total=len(positions)) as task:
        for first in range(0, len(positions), step):
            chunk = positions[first : first + step]
            score_chunk, target_scores = scorer(store, chunk)
            excluded = seen_pairs(store, chunk) if options.exclude_seen else None
            ranks = rank_targets(score_chunk, target_scores, store.items[chunk], dataset.n_items, options.chunk_size, options.ties, excluded)
            accumulator.add(ranks, sessions[first : first + step])
            task.update(advance=len(chunk))
    return finish(accumulator, options)
