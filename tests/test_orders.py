"""Carts and orders in the data contract (sessions schema 2): kept beside the clicks by every reader, carried
through preprocessing without changing the clicks, turned into order labels and order metrics, and OTTO's own
task end to end; datasets of schema 1 still read, train, evaluate and recommend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.helpers import fixture, invoke, tiny_train_args
from tron_cli.artifacts.sessions import CART, ORDER, ExtraEvents, Sessions, read_dataset, read_sessions
from tron_cli.evaluation.metrics import Accumulator
from tron_cli.evaluation.otto_task import merged
from tron_cli.evaluation.procedures import EvalOptions, otto_protocol
from tron_cli.inference.scorer import Scorer
from tron_cli.labels import order_labels


def _preprocess(home: Path, *args: str) -> dict:
    result = invoke("preprocess", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_order_labels_mark_clicks_whose_item_is_ordered_at_or_after_them():
    sessions = Sessions(
        np.array([1, 2]),
        np.array([0, 4, 6]),
        np.array([5, 6, 5, 7, 5, 5], dtype=np.int32),
        np.array([1, 2, 3, 4, 10, 20]),
        ExtraEvents(np.array([0, 3, 4]), np.array([5, 7, 6, 5], dtype=np.int32), np.array([3, 9, 5, 15]), np.array([ORDER, CART, ORDER, ORDER], dtype=np.int8)),
    )
    # session 1: item 5 ordered at t=3 (clicks of 5 at t=1 and t=3 count, not later ones); 7 only carted; 6 ordered at t=5 > 2
    # session 2: item 5 ordered at t=15: the click at t=10 counts, the one at t=20 does not
    assert order_labels(sessions).tolist() == [True, True, True, False, True, False]


def test_accumulator_order_metrics_are_global_ratios():
    accumulator = Accumulator(2, (1, 2), torch.device("cpu"), orders=True)
    ranks = torch.tensor([0.0, 1.0, 5.0, 0.0], dtype=torch.float64)
    accumulator.add(ranks, torch.tensor([0, 0, 1, 1]), torch.tensor([True, True, True, False]))
    result = accumulator.result()
    assert result["order_recall@1"] == pytest.approx(1 / 3) and result["order_recall@2"] == pytest.approx(2 / 3)
    assert result["order_density@1"] == pytest.approx(1 / 2) and result["order_density@2"] == pytest.approx(2 / 3)
    assert result["n_ordered"] == 3 and result["recall@2"] == pytest.approx(3 / 4)


def test_synthetic_data_keeps_carts_and_orders_of_clicked_items(home):
    assert invoke("download", "synthetic", "--sessions", "1500", "--items", "200").exit_code == 0
    summary = _preprocess(home)
    assert summary["train"]["orders"] > 0 and summary["train"]["carts"] > summary["train"]["orders"]
    dataset = read_dataset(Path(summary["dataset"]))
    assert dataset.extra_types == ("carts", "orders")
    train = dataset.sessions("train")
    assert pq.ParquetFile(Path(summary["dataset"]) / "train.parquet").schema_arrow.metadata[b"tron.schema"] == b"sessions/2"
    labels = order_labels(train)
    assert 0.005 < labels.mean() < 0.2  # a second objective with something to learn
    # orders are of items the session clicked before (the generator's rule; only an order before any click is not)
    owner = np.repeat(np.arange(len(train)), np.diff(train.extra.offsets))
    orders = np.flatnonzero(train.extra.types == ORDER)
    clicked = {(s, int(i)) for s, i in zip(np.repeat(np.arange(len(train)), train.lengths), train.items)}
    assert np.mean([(int(owner[o]), int(train.extra.items[o])) in clicked for o in orders]) > 0.9


def test_the_clicks_are_the_same_with_or_without_the_other_events(home, tmp_path):
    """Yoochoose's buys and Diginetica's purchases, beside their clicks, change no click, session or item."""
    for name, clicks_file, others_file in [
        ("yoochoose", "sample_yoochoose.dat", "yoochoose-buys.dat"),
        ("diginetica", "sample_train-item-views.csv", "train-purchases.csv"),
    ]:
        bare, typed = tmp_path / f"{name}-bare", tmp_path / f"{name}-typed"
        bare.mkdir()
        typed.mkdir()
        source = fixture(f"data/raw/{clicks_file}")
        target = "yoochoose-clicks.dat" if name == "yoochoose" else "train-item-views.csv"
        shutil.copy(source, bare / target)
        shutil.copy(source, typed / target)
        lines = source.read_text().splitlines()
        if name == "yoochoose":  # buy the first item of some sessions, a minute after their first click
            rows = [line.split(",") for line in lines[::7]]
            (typed / others_file).write_text("".join(f"{r[0]},{r[1]},{r[2]},100,1\n" for r in rows))
        else:
            body = [line.split(";") for line in lines[1::7]]
            (typed / others_file).write_text(
                "sessionId;userId;timeframe;eventdate;ordernumber;itemId\n" + "".join(f"{r[0]};NA;{int(r[3]) + 1};{r[4]};1;{r[2]}\n" for r in body)
            )
        a = _preprocess(home, name, "--input", str(bare), "--name", f"{name}-bare")
        b = _preprocess(home, name, "--input", str(typed), "--name", f"{name}-typed")
        for split in ("train", "test"):
            assert a[split]["events"] == b[split]["events"] and a[split]["sessions"] == b[split]["sessions"]
            left, right = read_sessions(Path(a["dataset"]) / f"{split}.parquet"), read_sessions(Path(b["dataset"]) / f"{split}.parquet")
            assert np.array_equal(left.items, right.items) and np.array_equal(left.session, right.session)
        assert a["n_items"] == b["n_items"] and b["train"]["orders"] > 0 and "orders" not in a["train"]


def test_own_csv_log_with_a_type_column(home):
    rows = ["sid,item,time,kind"]
    for s in range(40):
        rows += [
            f"s{s},i{s % 7},{s * 100000 + 1},view",
            f"s{s},i{(s + 1) % 7},{s * 100000 + 2},VIEW",
            f"s{s},i{s % 7},{s * 100000 + 3},addtocart",
            f"s{s},i{s % 7},{s * 100000 + 4},transaction",
        ]
    (home / "log.csv").write_text("\n".join(rows) + "\n")
    summary = _preprocess(
        home, "--train", "log.csv", "--session-col", "sid", "--item-col", "item", "--time-col", "time", "--type-col", "kind", "--test-days", "0.5", "--no-valid"
    )
    total = {key: sum(summary[split].get(key, 0) for split in ("train", "test")) for key in ("events", "carts", "orders")}
    assert total == {"events": 80, "carts": 40, "orders": 40}
    train = read_sessions(Path(summary["dataset"]) / "train.parquet")
    assert order_labels(train).reshape(-1, 2)[:, 0].all()  # the first click of every session is its ordered item


def test_otto_sample_keeps_its_carts_and_orders(home):
    shutil.copy(fixture("data/otto-sample.jsonl"), home / "otto.jsonl")
    summary = _preprocess(home, "--train", "otto.jsonl", "--test-days", "0.2", "--no-valid")
    assert sum(summary[split].get("carts", 0) for split in ("train", "test")) > 0
    assert sum(summary[split].get("orders", 0) for split in ("train", "test")) > 0


class _Fixed(torch.nn.Module):
    """A model whose state is its window's last click, scoring item j as state . table[j]: its top items are known."""

    n_items, max_length, prefix_states, feeding = 6, 5, False, "windows"

    def last_hidden(self, windows):
        return torch.nn.functional.one_hot(windows[:, -1], 7).float()

    def score_all(self, hidden, start=1, stop=None):
        # item i's score for state e_c: 1 when i == (c % 6) + 1 (the next item of a ring), else -i/100
        table = torch.full((7, 7), 0.0)
        for c in range(7):
            table[c, 1:] = -torch.arange(1, 7).float() / 100
            table[c, (c % 6) + 1] = 1.0
        return (hidden @ table)[:, start : 7 if stop is None else stop]


def test_otto_protocol_end_to_end_by_hand():
    """Two sessions cut at known points: the model's top list is [next ring item, 1, 2, ...]."""
    # session 0: clicks 1, 2, 3 and an order of 3 after the last click; session 1: clicks 4, 5 and a cart of 6
    sessions = Sessions(
        np.array([0, 1]),
        np.array([0, 3, 5]),
        np.array([1, 2, 3, 4, 5], dtype=np.int32),
        np.array([1, 2, 3, 1, 2]),
        ExtraEvents(np.array([0, 1, 2]), np.array([3, 6], dtype=np.int32), np.array([4, 3]), np.array([ORDER, CART], dtype=np.int8)),
    )
    assert merged(sessions).items.tolist() == [1, 2, 3, 3, 4, 5, 6]
    popular = torch.tensor([6, 5, 4, 3, 2, 1])
    options = EvalOptions(cut_seed=7)
    import random

    rng = random.Random(7)
    cuts = [rng.randint(1, 3), rng.randint(1, 2)]
    result = otto_protocol(Scorer(_Fixed()), sessions, popular, options)
    # session 0 cut at c: context clicks 1..c, next click c + 1 (none when c = 3), order {3} after the cut
    # the model ranks the ring's next item first, so a next click is always a hit; 3 is in any top-6 list
    expected_clicks = [1.0 if c < 3 else None for c in cuts[:1]] + [1.0 if cuts[1] < 2 else None]
    click_labels = [x for x in expected_clicks if x is not None]
    assert result["n_clicks"] == len(click_labels) and result["otto_clicks"] == pytest.approx(1.0 if click_labels else 0.0)
    assert result["n_orders"] == 1 and result["otto_orders"] == pytest.approx(1.0)
    assert result["n_carts"] == 1 and result["otto_carts"] == pytest.approx(1.0)
    assert result["otto_total"] == pytest.approx(0.1 * result["otto_clicks"] + 0.3 + 0.6)


def test_evaluate_protocol_otto_through_the_cli(tiny_model, tmp_path):
    run = tmp_path / "run"  # a copy: evaluate writes metrics.json, and the session's run is shared read-only
    shutil.copytree(tiny_model[0], run)
    result = invoke("evaluate", str(run), "--protocol", "otto", "--json")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["n_sessions"] > 0 and metrics["n_orders"] > 0
    for key in ("otto_clicks", "otto_carts", "otto_orders"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["otto_total"] == pytest.approx(0.1 * metrics["otto_clicks"] + 0.3 * metrics["otto_carts"] + 0.6 * metrics["otto_orders"])
    again = json.loads(invoke("evaluate", str(run), "--protocol", "otto", "--json").stdout)
    assert again["otto_total"] == metrics["otto_total"]  # the cuts are seeded: the same score every time


def _as_version_1(dataset: Path) -> None:
    """Rewrite a dataset as tron wrote it before carts and orders: sessions/1 files, dataset/1 without extra types."""
    for path in dataset.glob("*.parquet"):
        table = pq.read_table(path)
        if "extra_items" in table.column_names:
            table = table.select(["session", "items", "ts"]).replace_schema_metadata({b"tron.schema": b"sessions/1"})
            pq.write_table(table, path)
    info = json.loads((dataset / "dataset.json").read_text())
    info["schema"] = "dataset/1"
    info.pop("extra_types", None)
    (dataset / "dataset.json").write_text(json.dumps(info))


def test_a_dataset_of_schema_1_still_trains_evaluates_and_recommends(tiny_dataset, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_dataset, old)
    _as_version_1(old)
    assert read_dataset(old).sessions("train").extra is None
    run = tmp_path / "run"
    fast = [*tiny_train_args(batch_negatives=None)]
    assert invoke("train", str(old), *fast, "--epochs", "1", "--overfit-batches", "2", "--out", str(run)).exit_code == 0
    evaluation = invoke("evaluate", str(run), "--json")
    assert evaluation.exit_code == 0 and "order_recall@20" not in json.loads(evaluation.stdout)
    assert invoke("evaluate", str(run), "--protocol", "otto").exit_code == 2  # nothing to score it with
    recommended = invoke("recommend", str(run), "-k", "3", input='{"session": 1, "items": [1, 2]}\n')
    assert recommended.exit_code == 0 and len(json.loads(recommended.stdout)["items"]) == 3


def test_a_click_only_dataset_reports_no_order_metrics_and_no_order_labels(home):
    rows = ["session_id,item_id,timestamp"]
    rows += [f"{s},{(s * 3 + j) % 23},{s * 100000 + j}" for s in range(300) for j in range(4)]
    (home / "clicks.csv").write_text("\n".join(rows) + "\n")
    dataset = Path(_preprocess(home, "--train", "clicks.csv", "--test-days", "0.1")["dataset"])
    assert read_dataset(dataset).sessions("train").extra is None
    run = home / "run"
    tiny = [*tiny_train_args(hidden_size=8, uniform_negatives=8, batch_size=8, batch_negatives=7, topk=8, max_length=None)]
    result = invoke("train", str(dataset), *tiny, "--epochs", "1", "--out", str(run))
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(invoke("evaluate", str(run), "--json").stdout)
    assert "recall@20" in metrics and not any(key.startswith("order_") for key in metrics)
    result = invoke("train", str(dataset), *tiny, "--epochs", "1", "--objective", "multitron", "--out", str(home / "multi"))
    assert result.exit_code == 2 and "has none" in result.stderr
