"""`tron train` end to end on tiny synthetic data: run dir, reference configs, exact resume, learning."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import invoke, tiny_train_args

FAST = [
    *tiny_train_args(hidden_size=32, uniform_negatives=256),
]


def test_train_writes_a_run_dir(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "train",
        str(tiny_dataset),
        "--device",
        "cpu",
        "--hidden-size",
        "32",
        "--uniform-negatives",
        "512",
        "--topk",
        "100",
        "--loss",
        "ssm",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 1 and summary["best_epoch"] == 1
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "history.jsonl", "checkpoint", "summary.json"}
    config = json.loads((out / "config.json").read_text())
    assert config["schema"] == "run/1"
    assert config["train"]["topk"] == 100 and config["train"]["loss"] == "ssm" and config["train"]["uniform_negatives"] == 512
    assert config["model"]["num_layers"] == 2 and config["model"]["dropout"] == 0.05  # TRON XL defaults
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and set(history[0]["valid"]) >= {"recall@20", "mrr@20"}
    assert {p.name for p in (out / "checkpoint").iterdir()} == {"weights.safetensors", "optimizer.safetensors", "generators.safetensors", "state.json"}
    assert "training summary" in result.stderr


def test_reference_config_is_accepted_unchanged(tiny_dataset, tmp_path, monkeypatch):
    reference = {
        "model": "sasrec",
        "dataset": tiny_dataset.name,
        "hidden_size": 200,
        "num_layers": 2,
        "dropout": 0.05,
        "num_batch_negatives": 127,
        "num_uniform_negatives": 16384,
        "reject_uniform_session_items": False,
        "reject_in_batch_items": True,
        "sampling_style": "batchwise",
        "topk_sampling": True,
        "topk_sampling_k": 100,
        "loss": "ssm",
        "bpr_penalty": 1.0,
        "max_epochs": 10,
        "batch_size": 128,
        "max_session_length": 50,
        "lr": 0.0005,
        "limit_val_batches": 1.0,
        "accelerator": "gpu",
        "overfit_batches": 0,
        "share_embeddings": True,
        "output_bias": False,
        "shuffling_style": "no_shuffling",
        "optimizer": "adam",
    }
    path = tmp_path / "tron-otto.json"
    path.write_text(json.dumps(reference))
    monkeypatch.setenv("TRON_HOME", str(tiny_dataset.parent.parent))
    out = tmp_path / "run"
    result = invoke("train", "--config", str(path), "--epochs", "1", "--overfit-batches", "2", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    train = config["train"]
    assert train["uniform_negatives"] == 16384 and train["batch_negatives"] == 127 and train["topk"] == 100
    assert train["sampling_style"] == "batchwise" and config["model"]["max_length"] == 50 and train["lr"] == 0.0005
    assert train["epochs"] == 1  # the flag wins over max_epochs
    assert config["dataset"]["name"] == tiny_dataset.name
    assert config["reference_config"] == reference


def test_reference_config_unknown_key_is_a_usage_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"model": "sasrec", "hiden_size": 100}))
    result = invoke("train", "--config", str(path))
    assert result.exit_code == 2
    assert "hiden_size" in result.stderr and "Traceback" not in result.stderr


def test_resume_reproduces_the_uninterrupted_run(tiny_dataset, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    args = [str(tiny_dataset), *FAST, "--shuffle", "shuffle_without_replacement", "--seed", "7"]
    assert invoke("train", *args, "--epochs", "2", "--out", str(whole)).exit_code == 0
    assert invoke("train", *args, "--epochs", "1", "--out", str(split)).exit_code == 0
    result = invoke("train", "--resume", str(split), "--epochs", "2")
    assert result.exit_code == 0, result.stderr
    a = load_file(whole / "checkpoint" / "weights.safetensors")
    b = load_file(split / "checkpoint" / "weights.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    history = [json.loads(line) for line in (split / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]


def test_resume_refuses_to_change_the_model(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    assert invoke("train", str(tiny_dataset), *FAST, "--epochs", "1", "--overfit-batches", "1", "--out", str(out)).exit_code == 0
    result = invoke("train", "--resume", str(out), "--hidden-size", "64")
    assert result.exit_code == 2 and "hidden-size" in result.stderr


@pytest.mark.parametrize(
    "options",
    [
        ["--loss", "bce", "--uniform-negatives", "1", "--sampling-style", "eventwise", "--batch-negatives", "0", "--topk", "0"],
        ["--loss", "bpr-max", "--bpr-penalty", "0.5", "--sampling-style", "sessionwise", "--topk", "0"],
        ["--loss", "ssm", "--reject-uniform-session-items", "--no-mask-hits"],
        ["--output-bias", "--no-share-embeddings", "--num-heads", "2"],
    ],
    ids=["sasrec-bce-1-eventwise", "bpr-max-sessionwise", "rejection", "bias-untied"],
)
def test_training_variants_run(tiny_dataset, tmp_path, options):
    out = tmp_path / "run"
    result = invoke("train", str(tiny_dataset), *FAST, *options, "--epochs", "1", "--overfit-batches", "3", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["loss"] > 0


def test_trained_model_beats_popularity(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    result = invoke("train", str(tiny_dataset), *FAST, "--hidden-size", "64", "--epochs", "6", "--lr", "0.002", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    model = json.loads(result.stdout)["valid"]["recall@20"]
    popular = invoke("evaluate", "--baseline", "popular", "--data", str(tiny_dataset), "--split", "valid", "--json")
    assert popular.exit_code == 0, popular.stderr
    baseline = json.loads(popular.stdout)["recall@20"]
    assert model > baseline + 0.15, (model, baseline)


def test_length_buckets_keep_each_window_and_narrow_the_batches():
    from tron_cli.training.order import bucket_by_length

    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(1000, generator=generator)
    lengths = torch.randint(2, 50, (1000,), generator=generator)
    bucketed = bucket_by_length(order, lengths, batch=32, window=8, generator=generator)
    for start in range(0, 1000, 256):  # the same sessions in each window of 8 batches, just regrouped
        assert sorted(bucketed[start : start + 256].tolist()) == sorted(order[start : start + 256].tolist())
    width = lambda o: sum(int(lengths[o[i : i + 32]].max()) for i in range(0, 1000, 32))
    assert width(bucketed) < 0.75 * width(order)


def test_bucketed_training_runs(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    result = invoke("train", str(tiny_dataset), *FAST, "--bucket-window", "8", "--epochs", "1", "--overfit-batches", "4", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["train"]["bucket_window"] == 8


def test_item_dropout_hides_input_items_in_training_only(tiny_dataset, tmp_path):
    """`--item-dropout p`: in training each input click's item embedding is zeroed with probability p (the
    rest as they are); in evaluation nothing is hidden; the setting trains and is kept in the run's config, and
    p = 1 is a usage error."""
    from tron_cli.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    model = SASRec(SASRecConfig(hidden_size=8, max_length=10, item_dropout=0.3), n_items=50)
    items = torch.randint(1, 51, (200, 10))

    def embed() -> torch.Tensor:
        return model._embed(items, sparse=False, preference=None, events=None, b=200, t=10)  # (B, T, d)

    model.eval()
    full = embed()
    assert not (full == 0).all(-1).any()
    model.train()
    rows = embed()
    hidden = (rows == 0).all(-1)  # (B, T)
    assert 0.25 < hidden.float().mean() < 0.35
    torch.testing.assert_close(rows[~hidden], full[~hidden])

    out = tmp_path / "run"
    result = invoke("train", str(tiny_dataset), *FAST, "--item-dropout", "0.2", "--epochs", "1", "--overfit-batches", "2", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["model"]["item_dropout"] == 0.2
    refused = invoke("train", str(tiny_dataset), *FAST, "--item-dropout", "1", "--out", str(tmp_path / "refused"))
    assert refused.exit_code == 2 and "--item-dropout must be in [0, 1)" in refused.stderr
    assert not (tmp_path / "refused").exists()


def test_left_positions_make_a_prefix_state_equal_its_state_in_the_whole_session():
    from tron_cli.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    for positions, consistent in (("left", True), ("right", False)):
        model = SASRec(SASRecConfig(hidden_size=16, max_length=10, dropout=0.0, positions=positions), n_items=50).eval()
        session = torch.tensor([[0, 0, 0, 5, 7, 9, 11, 3]])
        whole = model(session)[0]
        prefix = torch.tensor([[0, 0, 0, 0, 0, 0, 5, 7]])
        assert torch.allclose(model.last_hidden(prefix)[0], whole[4], atol=1e-5) == consistent
