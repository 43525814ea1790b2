"""Ranks and metrics: parity with the reference's evaluation, and a naive implementation with ties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import golden
from tron_cli.evaluation.metrics import Accumulator, metric_values
from tron_cli.inference.scoring import rank_targets, ranks_from_scores
from tron_cli.models.base import ItemScorer


@pytest.mark.parametrize("case", range(2))
def test_metrics_match_reference(case):
    data = golden("metrics.json")["cases"][case]
    table = torch.tensor(data["item_embeddings"])
    scorer = ItemScorer(table.shape[0] - 1, table.shape[1], True, False)
    with torch.no_grad():
        scorer.item_embedding.copy_(table)
    hidden = torch.tensor(data["hidden"])
    mask = torch.tensor(data["mask"]).bool()
    labels = torch.tensor(data["labels"])[mask]
    queries = hidden[mask]
    target_scores = scorer.score(queries, labels[:, None]).squeeze(1)
    ranks = rank_targets(lambda a, b: scorer.score_all(queries, a, b), target_scores, labels, scorer.n_items, chunk_size=7)
    values = metric_values(ranks, data["cutoffs"])
    for k, recall, mrr in zip(data["cutoffs"], data["recall"], data["mrr"]):
        assert float(values[f"recall@{k}"].mean()) == pytest.approx(recall, abs=1e-6)
        assert float(values[f"mrr@{k}"].mean()) == pytest.approx(mrr, abs=1e-6)


def _naive_rank(row: np.ndarray, target: int, ties: str, excluded: set[int]) -> float:
    others = [row[j] for j in range(1, len(row)) if j != target and j not in excluded]
    higher = sum(s > row[target] for s in others)
    equal = sum(s == row[target] for s in others)
    if target in excluded:
        return float("inf")
    return {"pessimistic": higher + equal, "optimistic": higher, "average": higher + equal / 2}[ties]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 30).flatmap(
        lambda n: st.tuples(
            st.lists(st.lists(st.integers(-3, 3), min_size=n + 1, max_size=n + 1), min_size=1, max_size=6),
            st.just(n),
        )
    ),
    st.sampled_from(["pessimistic", "optimistic", "average"]),
    st.integers(1, 9),
    st.data(),
)
def test_ranks_equal_naive_with_ties_and_exclusions(scores_and_n, ties, chunk, data):
    rows, n = scores_and_n
    scores = np.array(rows, dtype=np.float32)  # small integers: many exact ties
    targets = np.array([data.draw(st.integers(1, n)) for _ in rows])
    excluded = [set(data.draw(st.lists(st.integers(1, n), max_size=3))) for _ in rows]
    table = torch.from_numpy(scores)
    ex_rows = torch.tensor([r for r, items in enumerate(excluded) for _ in items], dtype=torch.long)
    ex_items = torch.tensor([i for items in excluded for i in items], dtype=torch.long)
    ranks = rank_targets(
        lambda a, b: table[:, a:b].clone(),
        table[torch.arange(len(rows)), torch.from_numpy(targets)],
        torch.from_numpy(targets),
        n,
        chunk_size=chunk,
        ties=ties,
        excluded=(ex_rows, ex_items),
    )
    expected = [_naive_rank(scores[r], int(targets[r]), ties, excluded[r]) for r in range(len(rows))]
    assert ranks.tolist() == expected


def test_metric_values_at_the_boundaries():
    ranks = torch.tensor([0.0, 4.0, 5.0, float("inf")], dtype=torch.float64)
    values = metric_values(ranks, [5])
    assert values["recall@5"].tolist() == [1, 1, 0, 0]
    assert values["mrr@5"].tolist() == pytest.approx([1, 0.2, 0, 0])
    assert values["ndcg@5"].tolist() == pytest.approx([1, 1 / np.log2(6), 0, 0])


def test_ranks_from_scores_tie_policies():
    scores = torch.tensor([[1.0, 2.0, 2.0, 0.0]])
    target = torch.tensor([2.0])
    assert ranks_from_scores(scores, target, "pessimistic").item() == 2
    assert ranks_from_scores(scores, target, "optimistic").item() == 0
    assert ranks_from_scores(scores, target, "average").item() == 1


def test_bootstrap_interval_brackets_the_estimate():
    accumulator = Accumulator(200, [10], torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    ranks = torch.randint(0, 30, (1000,), generator=generator).double()
    sessions = torch.randint(0, 200, (1000,), generator=generator)
    accumulator.add(ranks, sessions)
    result = accumulator.result()
    interval = accumulator.bootstrap(200, seed=1)
    assert interval["recall@10_low"] < result["recall@10"] < interval["recall@10_high"]
    assert interval == accumulator.bootstrap(200, seed=1)  # seeded: reproducible
