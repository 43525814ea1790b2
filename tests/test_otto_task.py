"""OTTO's own task against its organisers' code (otto-de/recsys-dataset): the ground truth of every cut of their
labels example, their split examples, the cut sessions and labels they published, their scoring example, and a
hand-computed run through `tron evaluate --protocol otto`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tron_cli.artifacts.sessions import EXTRA_TYPES, ExtraEvents, Sessions
from tron_cli.evaluation.otto_task import Cut, cut, draw_cuts, merged, score

FIXTURES = Path(__file__).parent / "fixtures" / "otto-recsys-dataset"


def sessions_of(records: list[list[dict]]) -> Sessions:
    """Sessions (raw aids as items) from lists of OTTO events, as tron stores them: clicks, and the rest beside."""
    clicks = [[e for e in events if e["type"] == "clicks"] for events in records]
    others = [[e for e in events if e["type"] != "clicks"] for events in records]

    def offsets(parts):
        return np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)

    extra = ExtraEvents(
        offsets(others),
        np.array([e["aid"] for p in others for e in p], dtype=np.int64),
        np.array([e["ts"] for p in others for e in p], dtype=np.int64),
        np.array([EXTRA_TYPES[e["type"]] for p in others for e in p], dtype=np.int8),
    )
    return Sessions(
        np.arange(len(records)),
        offsets(clicks),
        np.array([e["aid"] for p in clicks for e in p], dtype=np.int64),
        np.array([e["ts"] for p in clicks for e in p]),
        extra,
    )


def labels_of(result: Cut, s: int) -> dict:
    """One session's labels in the organisers' spelling (absent when empty)."""
    out: dict = {}
    if result.next_click[s]:
        out["clicks"] = int(result.next_click[s])
    for name, (sessions, items) in (("carts", result.carted), ("orders", result.ordered)):
        chosen = set(items[sessions == s].tolist())
        if chosen:
            out[name] = chosen
    return out


# the events of otto-de/recsys-dataset test/test_labels.py, and the labels src/labels.py gives each of them
EVENTS = [
    (1000000, 1, "clicks"),
    (1000001, 2, "clicks"),
    (1000002, 3, "clicks"),
    (1000003, 4, "clicks"),
    (1000000, 5, "carts"),
    (1000004, 6, "clicks"),
    (1000004, 7, "carts"),
    (1000005, 8, "clicks"),
    (1000007, 9, "clicks"),
    (1000007, 10, "carts"),
    (100005, 11, "carts"),
    (1000000, 12, "orders"),
    (1000004, 12, "orders"),
    (1000007, 13, "clicks"),
    (1000007, 14, "carts"),
]
CARTS_ALL, ORDERS_ALL = {1000000, 1000004, 1000007, 100005}, {1000000, 1000004}
EXPECTED = [
    {"clicks": 1000001, "carts": CARTS_ALL, "orders": ORDERS_ALL},
    {"clicks": 1000002, "carts": CARTS_ALL, "orders": ORDERS_ALL},
    {"clicks": 1000003, "carts": CARTS_ALL, "orders": ORDERS_ALL},
    {"clicks": 1000004, "carts": CARTS_ALL, "orders": ORDERS_ALL},
    {"clicks": 1000004, "carts": {1000004, 1000007, 100005}, "orders": ORDERS_ALL},
    {"clicks": 1000005, "carts": {1000004, 1000007, 100005}, "orders": ORDERS_ALL},
    {"clicks": 1000005, "carts": {1000007, 100005}, "orders": ORDERS_ALL},
    {"clicks": 1000007, "carts": {1000007, 100005}, "orders": ORDERS_ALL},
    {"clicks": 1000007, "carts": {1000007, 100005}, "orders": ORDERS_ALL},
    {"clicks": 1000007, "carts": {100005, 1000007}, "orders": ORDERS_ALL},
    {"clicks": 1000007, "carts": {1000007}, "orders": ORDERS_ALL},
    {"clicks": 1000007, "carts": {1000007}, "orders": {1000004}},
    {"clicks": 1000007, "carts": {1000007}},
    {"carts": {1000007}},
]


@pytest.mark.parametrize("split", range(1, len(EVENTS)))
def test_labels_after_every_cut_equal_the_organisers_ground_truth(split):
    sessions = sessions_of([[{"aid": a, "ts": 1_000_000_000_000 + t, "type": k} for a, t, k in EVENTS]])
    result = cut(merged(sessions), np.array([split]))
    assert labels_of(result, 0) == EXPECTED[split - 1]
    assert result.context_clicks[0] == sum(1 for _, _, kind in EVENTS[:split] if kind == "clicks")


@pytest.mark.parametrize(("split", "expected"), [(1, {"clicks": 2, "carts": {1}, "orders": {1}}), (2, {"clicks": 2, "orders": {1}}), (3, {"clicks": 2})])
def test_the_organisers_split_examples(split, expected):
    events = [
        {"aid": 1, "ts": 1, "type": "clicks"},
        {"aid": 1, "ts": 2, "type": "carts"},
        {"aid": 1, "ts": 3, "type": "orders"},
        {"aid": 2, "ts": 4, "type": "clicks"},
    ]
    assert labels_of(cut(merged(sessions_of([events])), np.array([split])), 0) == expected


def test_the_cut_sessions_and_labels_the_organisers_published():
    full = [json.loads(line) for line in (FIXTURES / "test_sessions_full.jsonl").read_text().splitlines()]
    cut_sessions = [json.loads(line) for line in (FIXTURES / "test_sessions.jsonl").read_text().splitlines()]
    published = [json.loads(line) for line in (FIXTURES / "test_labels.jsonl").read_text().splitlines()]
    splits = np.array([len(s["events"]) for s in cut_sessions])
    result = cut(merged(sessions_of([s["events"] for s in full])), splits)
    for s, (context, labels) in enumerate(zip(cut_sessions, published)):
        assert result.context_clicks[s] == sum(e["type"] == "clicks" for e in context["events"])
        assert labels_of(result, s) == {k: set(v) if isinstance(v, list) else v for k, v in labels["labels"].items()}


def test_cuts_are_drawn_as_testset_py_draws_them():
    import random

    lengths = np.array([4, 1, 2, 7, 3])
    rng = random.Random(42)
    expected = [rng.randint(1, n - 1) if n >= 2 else 0 for n in lengths]
    assert draw_cuts(lengths, 42).tolist() == expected
    assert all(1 <= c <= n - 1 for c, n in zip(expected, lengths) if n >= 2)


def test_the_organisers_scoring_example():
    """otto-de/recsys-dataset test/test_evaluate.py `test_get_scores`: k 3, recalls 1/3, 3/9, 1/5."""
    labels = Cut(
        context_clicks=np.zeros(5, np.int64),
        next_click=np.array([0, 0, 1000003, 1000003, 1000003]),
        carted=(np.array([2, 2, 2, 3, 3, 3, 4, 4, 4]), np.array([1000000, 1000004, 1000007] * 3)),
        ordered=(np.array([1] * 11 + [2, 2]), np.array([0, 1, 2, 3, 4, 5, 16, 17, 18, 19, 20, 1000000, 1000004])),
        labelled=np.array([False, True, True, True, True]),
    )
    nothing = [-1, -1, -1, -1]
    top = {
        "clicks": np.array([nothing, [1, 2, 3, -1], [1000003, 2, 3, -1], [1, 2, 3, -1], nothing]),
        "carts": np.array([nothing, [1, 2, 3, -1], [1000004, 2, 3, 1000007], [1000007, 1000004, 3, -1], nothing]),
        "orders": np.array([nothing, [1, 32, 33, -1], [1, 2, 3, -1], [1, 2, 3, -1], nothing]),
    }
    result = score(top, labels, k=3)
    assert result["otto_clicks"] == pytest.approx(1 / 3) and result["otto_carts"] == pytest.approx(3 / 9) and result["otto_orders"] == pytest.approx(1 / 5)
    assert result["otto_total"] == pytest.approx(0.1 / 3 + 0.3 * 3 / 9 + 0.6 / 5)
    assert (result["n_clicks"], result["n_carts"], result["n_orders"]) == (3, 9, 5)
