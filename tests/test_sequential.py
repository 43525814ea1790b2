"""Leave-one-out (sequential) data: the dataset's own evaluation protocol, and full cross-entropy that learns."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from tests.helpers import invoke, tiny_train_args


def test_leave_one_out_data_is_validated_and_evaluated_as_its_test_is_scored(tiny_sequences, tmp_path):
    """NDCG@10 without seen items picks the epoch and is what `tron evaluate` reports, unless told otherwise."""
    assert json.loads((tiny_sequences / "dataset.json").read_text())["evaluation"] == {"select_on": "ndcg@10", "exclude_seen": True}
    run = tmp_path / "run"
    result = invoke("train", str(tiny_sequences), *tiny_train_args(epochs=1), "--out", str(run), "--json")
    assert result.exit_code == 0, result.stderr
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["select_on"], train["exclude_seen"]) == ("ndcg@10", True)
    assert json.loads(result.stdout)["selected_by"] == "valid ndcg@10"
    assert "valid NDCG@10" in result.stderr
    assert json.loads(invoke("evaluate", str(run), "--json").stdout)["exclude_seen"] is True
    assert json.loads(invoke("evaluate", str(run), "--no-exclude-seen", "--json").stdout)["exclude_seen"] is False
    told = tmp_path / "told"
    result = invoke("train", str(tiny_sequences), *tiny_train_args(epochs=1), "--select-on", "recall@20", "--no-exclude-seen", "--out", str(told))
    assert result.exit_code == 0, result.stderr
    train = json.loads((told / "config.json").read_text())["train"]
    assert (train["select_on"], train["exclude_seen"]) == ("recall@20", False)


def test_blend_grids_on_leave_one_out_data_validate_with_the_seen_items(tiny_sequences, tmp_path):
    """The grids rank with the session's clicks: the dataset's exclude_seen gives way to them, its metric does not."""
    run = tmp_path / "run"
    result = invoke("train", str(tiny_sequences), *tiny_train_args(epochs=1), "--repeat-grid", "0,1", "--out", str(run))
    assert result.exit_code == 0, result.stderr
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["select_on"], train["exclude_seen"]) == ("ndcg@10", False)


def test_time_split_data_keeps_recall_at_20_over_every_item(tiny_dataset):
    """A time split's dataset.json is written as before (no `evaluation` key); its protocol follows from its targets."""
    from tron_cli.artifacts.sessions import read_dataset

    assert "evaluation" not in json.loads((tiny_dataset / "dataset.json").read_text())
    assert read_dataset(tiny_dataset).evaluation == {"select_on": "recall@20", "exclude_seen": False}


def _valid_loss(run: Path) -> float:
    """Mean full-catalogue cross-entropy of each validation session's last item under the run's weights."""
    from tron_cli.artifacts.sessions import read_dataset
    from tron_cli.batching import SessionStore
    from tron_cli.modelio import load_model

    model, document, _ = load_model(run, torch.device("cpu"))
    dataset = read_dataset(Path(document["dataset"]["path"]))
    store = SessionStore(dataset.sessions("valid"), torch.device("cpu"), min_length=2)
    positions = store.target_positions(last_only=True)  # (Q,)
    with torch.no_grad():
        scores = model.score_all(model.last_hidden(store.query_windows(positions, model.max_length)))  # (Q, N): items 1..N
        targets = store.items[positions] - 1
        return float((torch.logsumexp(scores, 1) - scores[torch.arange(len(targets)), targets]).mean())


def test_full_cross_entropy_learns_at_least_as_fast_as_sampled_softmax(tiny_sequences, tmp_path):
    """The same network, seed and steps: the full softmax's validation loss falls at least as far as TRON's
    sampled softmax's (issue 31: full cross-entropy once trained far slower than the published SASRec+)."""
    losses = {}
    for loss in ("ce", "ssm"):
        run = tmp_path / loss
        result = invoke("train", str(tiny_sequences), *tiny_train_args(epochs=3), "--loss", loss, "--lr", "5e-3", "--out", str(run))
        assert result.exit_code == 0, result.stderr
        losses[loss] = _valid_loss(run)
    uniform = math.log(json.loads((tiny_sequences / "dataset.json").read_text())["n_items"])  # about where both start
    assert losses["ce"] <= losses["ssm"], losses
    assert losses["ce"] < uniform - 0.5, (losses, uniform)  # and it does learn


def test_the_sequential_preset_trains_the_published_network_with_full_cross_entropy(tiny_sequences, tmp_path):
    """`--preset sequential` is SASRec+ as published (issue 31), and a flag still wins over it."""
    run = tmp_path / "run"
    result = invoke("train", str(tiny_sequences), "--preset", "sequential", "--epochs", "2", "--device", "cpu", "--out", str(run), "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads((run / "config.json").read_text())
    train, model = document["train"], document["model"]
    assert (train["loss"], train["uniform_negatives"], train["batch_negatives"], train["lr"], train["batch_size"]) == ("ce", 0, 0, 0.001, 128)
    assert (model["hidden_size"], model["num_layers"], model["num_heads"], model["dropout"]) == (64, 2, 1, 0.5)
    assert (model["block"], model["init"], model["positions"], model["max_length"]) == ("sasrec", "normal", "left", 50)
    assert "negatives" not in result.stderr  # a full softmax is not warned about negatives it does not draw
    assert json.loads(result.stdout)["selected_by"] == "valid ndcg@10"  # the dataset's metric, not one the preset names
    sampled = tmp_path / "sampled"
    args = ("--preset", "sequential", "--loss", "ssm", "--uniform-negatives", "64", "--epochs", "1", "--device", "cpu")
    result = invoke("train", str(tiny_sequences), *args, "--out", str(sampled))
    assert result.exit_code == 0, result.stderr
    train = json.loads((sampled / "config.json").read_text())["train"]
    assert (train["loss"], train["uniform_negatives"], train["topk"]) == ("ssm", 64, 0)
