"""`tron evaluate`: output, baselines against independent computations, the reference protocol, safety checks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.helpers import invoke, tiny_train_args

FAST = [
    *tiny_train_args(hidden_size=32, uniform_negatives=256),
]


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = invoke("train", str(tiny_dataset), *FAST, "--epochs", "2", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    return out


def test_evaluate_json(tiny_run):
    result = invoke("evaluate", str(tiny_run), "--json")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)  # stdout is pure JSON
    for k in (5, 10, 20):
        for name in ("recall", "mrr", "ndcg"):
            assert 0.0 <= metrics[f"{name}@{k}"] <= 1.0
    assert metrics["recall@5"] <= metrics["recall@10"] <= metrics["recall@20"]
    assert metrics["mrr@20"] <= metrics["recall@20"]
    assert metrics["n_targets"] > 0
    stored = json.loads((tiny_run / "metrics.json").read_text())
    assert stored["schema"] == "metrics/1" and stored["metrics"]["recall@20"] == metrics["recall@20"]
    assert "Recall" in result.stderr  # the table for people goes to stderr


def test_evaluate_counts_every_target_of_the_test_split(tiny_run, tiny_dataset):
    info = json.loads((tiny_dataset / "dataset.json").read_text())
    result = invoke("evaluate", str(tiny_run), "--json", "-k", "20")
    assert json.loads(result.stdout)["n_targets"] == info["counts"]["test"]["targets"]


def test_bootstrap_and_exclude_seen(tiny_run):
    plain = json.loads(invoke("evaluate", str(tiny_run), "--json").stdout)
    result = invoke("evaluate", str(tiny_run), "--json", "--bootstrap", "50", "--exclude-seen")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["recall@20_low"] <= metrics["recall@20"] <= metrics["recall@20_high"]
    assert metrics["recall@20"] != plain["recall@20"]


def test_popular_baseline_equals_an_independent_computation(yoochoose_64):
    result = invoke("evaluate", "--baseline", "popular", "--data", str(yoochoose_64), "--json")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    counts = pq.read_table(yoochoose_64 / "items.parquet").column("count").to_numpy()
    test = pq.read_table(yoochoose_64 / "test.parquet").column("items").to_pylist()
    targets = np.array([item for session in test for item in session[1:]])
    target_counts = counts[targets - 1]
    # pessimistic rank: items other than the target with a count >= the target's
    ranks = len(counts) - np.searchsorted(np.sort(counts), target_counts, side="left") - 1
    assert metrics["n_targets"] == len(targets)
    for k in (5, 10, 20):
        assert metrics[f"recall@{k}"] == pytest.approx(np.mean(ranks < k), abs=1e-12)
        assert metrics[f"mrr@{k}"] == pytest.approx(np.mean(np.where(ranks < k, 1 / (ranks + 1), 0)), abs=1e-12)


def test_markov_baseline_beats_popularity(tiny_dataset):
    popular = json.loads(invoke("evaluate", "--baseline", "popular", "--data", str(tiny_dataset), "--json").stdout)
    markov = json.loads(invoke("evaluate", "--baseline", "markov", "--data", str(tiny_dataset), "--json").stdout)
    assert markov["recall@20"] > popular["recall@20"] + 0.1


def test_tron_protocol_reproduces_the_reference_target_count(yoochoose_64, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "train", str(yoochoose_64), *FAST, "--batch-size", "128", "--batch-negatives", "127", "--epochs", "1", "--overfit-batches", "1", "--out", str(out)
    )
    assert result.exit_code == 0, result.stderr
    result = invoke("evaluate", str(out), "--protocol", "tron", "--json")
    assert result.exit_code == 0, result.stderr
    # the reference with max length 20 and batch 128 scored 53,182 targets on this split (../shared/data/README.md)
    assert json.loads(result.stdout)["n_targets"] == 53182


def test_a_run_refuses_another_dataset(tiny_run, yoochoose_64):
    result = invoke("evaluate", str(tiny_run), "--data", str(yoochoose_64))
    assert result.exit_code == 1
    assert "trained on dataset" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------- the fast paths compute the same


def _padded_windows(n: int, width: int, n_items: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    windows = torch.randint(1, n_items + 1, (n, width), generator=generator)
    lengths = torch.randint(1, width + 1, (n,), generator=generator)
    return torch.where(torch.arange(width)[None, :] >= width - lengths[:, None], windows, 0)  # left-padded


@pytest.mark.parametrize("positions, block", [("right", "pre"), ("left", "pre"), ("right", "sasrec"), ("left", "sasrec")])
def test_the_state_after_the_last_click_is_the_last_column_of_the_whole_pass(positions, block):
    from tron_cli.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    model = SASRec(SASRecConfig(hidden_size=32, num_heads=2, num_layers=3, max_length=12, positions=positions, block=block), n_items=60).eval()
    windows = _padded_windows(40, 12, 60)
    with torch.no_grad():
        torch.testing.assert_close(model.last_hidden(windows), model(windows)[:, -1], atol=1e-6, rtol=1e-5)


def test_encoding_in_slices_gives_the_states_of_one_pass(monkeypatch):
    from tron_cli.evaluation import procedures
    from tron_cli.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    model = SASRec(SASRecConfig(hidden_size=16, max_length=8), n_items=30).eval()
    windows = _padded_windows(10, 8, 30)
    monkeypatch.setitem(procedures.ENCODE_ROWS, "cpu", 3)  # slices of 3, 3, 3 and 1
    with torch.no_grad():
        torch.testing.assert_close(procedures.encode(model, windows), model.last_hidden(windows), atol=1e-6, rtol=1e-5)


def test_a_cpu_ranks_in_cache_sized_chunks_and_a_gpu_in_the_chunk_asked_for():
    from tron_cli.inference.scoring import RANK_BUDGET, rank_chunk

    assert rank_chunk(65536, 1024, torch.device("cpu")) == RANK_BUDGET["cpu"] // 1024
    assert rank_chunk(100, 1024, torch.device("cpu")) == 100  # --chunk-size stays an upper bound
    assert rank_chunk(65536, 1 << 30, torch.device("cpu")) == 1
    assert rank_chunk(65536, 1024, torch.device("cuda")) == 65536
