"""Baselines: exact ranks by counting against a dense score matrix, session kNN against a per-session
reading of its definition, and their options through the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.helpers import invoke
from tron_cli.artifacts.sessions import read_dataset
from tron_cli.batching import SessionStore
from tron_cli.evaluation.baselines import BASELINES, Bonus, rank_by_counting
from tron_cli.inference.scoring import rank_targets


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic", "average"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_by_counting_equals_ranking_a_dense_score_matrix(ties, seed):
    generator = torch.Generator().manual_seed(seed)
    n, q = 40, 25
    base = torch.cat([torch.zeros(1, dtype=torch.int64), torch.randint(0, 6, (n,), generator=generator)])  # many ties
    rows = torch.randint(0, q, (60,), generator=generator)
    items = torch.randint(1, n + 1, (60,), generator=generator)
    keys = torch.unique(rows * (n + 1) + items)  # one bonus per (row, item)
    bonus = Bonus(keys // (n + 1), keys % (n + 1), torch.randint(0, 3, (len(keys),), generator=generator) * 7)
    targets = torch.randint(1, n + 1, (q,), generator=generator)
    excluded = (torch.randint(0, q, (30,), generator=generator), torch.randint(1, n + 1, (30,), generator=generator))  # duplicates included
    dense = base[None, :].repeat(q, 1).double()
    dense.index_put_((bonus.rows, bonus.items), bonus.values.double(), accumulate=True)
    expected = rank_targets(lambda a, b: dense[:, a:b].clone(), dense[torch.arange(q), targets], targets, n, 7, ties, excluded)
    counted = rank_by_counting(base, torch.sort(base[1:]).values, bonus, targets, ties, excluded)
    assert torch.equal(counted, expected)
    assert math.inf in counted.tolist() or not bool((excluded[1] == targets[excluded[0]]).any())


def _naive_knn(train: list[list[int]], prefix: list[int], k: int, sample_size: int, decay: str | None) -> dict[int, float]:
    """Session kNN for one session prefix, read off its definition one train session at a time."""
    weights: dict[int, float] = {}
    for recency, item in enumerate(reversed(prefix), start=1):
        weight = 1.0 if decay is None else (1.0 / recency if decay == "div" else max(0.1, 1 - 0.1 * (recency - 1)))
        weights.setdefault(item, weight)  # the most recent click of an item sets its weight
    sharing = [s for s, session in enumerate(train) if set(session) & set(weights)]
    candidates = sharing[-sample_size:]  # sessions are in time order: the most recent ones
    similarity = {}
    for s in candidates:
        items = set(train[s])
        overlap = sum(w for item, w in weights.items() if item in items)
        similarity[s] = overlap / math.sqrt(len(weights) * len(items)) if decay is None else overlap
    neighbours = sorted(candidates, key=lambda s: (-similarity[s], candidates.index(s)))[:k]
    scores: dict[int, float] = {}
    for s in neighbours:
        for item in set(train[s]):
            scores[item] = scores.get(item, 0.0) + similarity[s]
    return scores


@pytest.mark.parametrize("name,decay", [("sknn", None), ("vsknn", "div"), ("vsknn", "linear")])
def test_session_knn_scores_equal_its_definition(tiny_dataset, name, decay):
    dataset = read_dataset(tiny_dataset)
    options = {"k": 1000, "sample_size": 40} | ({"decay": decay} if decay else {})  # k above the sample: no tie at the cut
    prepared = BASELINES.get(name).prepare(dataset, torch.device("cpu"), BASELINES.get(name).resolve(options))
    train = dataset.sessions("train")
    train_sessions = [train.items[a:b].tolist() for a, b in zip(train.offsets[:-1], train.offsets[1:])]
    store = SessionStore(dataset.sessions("test"), torch.device("cpu"), min_length=2)
    positions = store.target_positions(False)[:60]
    bonus = prepared.scorer(store, positions)
    for row in (0, 7, 31, 59):
        start = int(store.offsets[store.session_of(positions[row : row + 1])][0])
        prefix = store.items[start : int(positions[row])].tolist()
        expected = _naive_knn(train_sessions, prefix, 1000, 40, decay)
        mine = bonus.rows == row
        got = dict(zip(bonus.items[mine].tolist(), bonus.values[mine].tolist()))
        assert got.keys() == expected.keys()
        assert all(got[item] == pytest.approx(expected[item], rel=1e-12) for item in expected)


def test_knn_baselines_through_the_cli_with_their_options(tiny_dataset):
    popular = json.loads(invoke("evaluate", "--baseline", "popular", "--data", str(tiny_dataset), "--json").stdout)
    for name in ("sknn", "vsknn"):
        result = invoke(
            "evaluate", "--baseline", name, "--data", str(tiny_dataset), "--baseline-option", "k=50", "--baseline-option", "sample-size=200", "--json"
        )
        assert result.exit_code == 0, result.stderr
        metrics = json.loads(result.stdout)
        assert metrics["baseline_options"]["k"] == 50 and metrics["baseline_options"]["sample_size"] == 200
        assert metrics["recall@20"] > popular["recall@20"] + 0.1
    listed = invoke("evaluate", "--baseline", "vsknn", "--data", str(tiny_dataset), "--baseline-option", "help")
    assert listed.exit_code == 0 and "sample_size" in listed.stderr and "decay" in listed.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--baseline", "sknn", "--baseline-option", "neighbours=5"], "is not an option of baseline sknn"),
        (["--baseline", "sknn", "--baseline-option", "k=0"], "must be an integer >= 1"),
        (["--baseline", "sknn", "--baseline-option", "k=many"], "takes a int"),
        (["--baseline", "popular", "--baseline-option", "k=5"], "is not an option of baseline popular"),
        (["--baseline-option", "k=5"], "needs --baseline"),
    ],
)
def test_bad_baseline_options_are_usage_errors(tiny_dataset, args, message):
    result = invoke("evaluate", "--data", str(tiny_dataset), *args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_markov_ranks_are_exact_without_a_score_matrix(tiny_dataset):
    """Markov's ranks by counting equal a dense (rows x catalogue) float64 ranking of the same scores."""
    dataset = read_dataset(tiny_dataset)
    prepared = BASELINES.get("markov").prepare(dataset, torch.device("cpu"), {})
    store = SessionStore(dataset.sessions("test"), torch.device("cpu"), min_length=2)
    positions = store.target_positions(False)[:200]
    bonus = prepared.scorer(store, positions)
    dense = prepared.base[None, :].repeat(len(positions), 1).double()
    dense.index_put_((bonus.rows, bonus.items), bonus.values.double(), accumulate=True)
    targets = store.items[positions]
    expected = rank_targets(lambda a, b: dense[:, a:b].clone(), dense[torch.arange(len(targets)), targets], targets, dataset.n_items)
    assert torch.equal(rank_by_counting(prepared.base, torch.sort(prepared.base[1:]).values, bonus, targets, "pessimistic", None), expected)
    assert np.isfinite(expected.numpy()).all()
