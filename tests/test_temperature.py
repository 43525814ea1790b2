"""`--temperature`: cosine scores divided by a temperature (NISER), the same in training, ranking, export and ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import invoke, tiny_train_args
from tron_cli.inference.scorer import Scorer
from tron_cli.inference.scoring import top_among, top_items
from tron_cli.models.sasrec import SASRec, SASRecConfig

TAU = 0.1


def _model(temperature: float = TAU, **settings) -> SASRec:
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(hidden_size=16, max_length=8, temperature=temperature, **settings), n_items=50)
    with torch.no_grad():  # item vectors of very different lengths, as popularity makes them
        model.item_embedding.mul_(torch.linspace(0.1, 10, 51)[:, None])
    return model.eval()


def _windows() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    windows = torch.randint(1, 51, (6, 8), generator=generator)
    windows[:3, :4] = 0  # left padding
    return windows


def test_scores_are_cosines_divided_by_the_temperature():
    model = _model()
    with torch.no_grad():
        hidden = model.last_hidden(_windows())  # (B, d)
        assert torch.allclose(hidden.norm(dim=-1), torch.full((6,), 1 / TAU))
        items = torch.arange(1, 51).expand(6, 50)
        scores = model.score(hidden, items)  # (B, N)
        expected = F.cosine_similarity(hidden[:, None, :], model.item_embedding[1:][None], dim=-1) / TAU
        assert torch.allclose(scores, expected, atol=1e-5)
        assert torch.allclose(model.score_all(hidden), scores, atol=1e-5)
        assert scores.abs().max() <= 1 / TAU + 1e-4
        assert model.output_rows(torch.tensor([0])).abs().sum() == 0  # padding stays zero


def test_vector_length_no_longer_decides_the_ranking():
    # without a temperature the longest vectors (the last ids) dominate every list; with one they do not
    windows = _windows()
    with torch.no_grad():
        _, dot_ids = top_items(Scorer(_model(0.0)), _model(0.0).last_hidden(windows), 5)
        cosine = _model()
        _, cos_ids = top_items(Scorer(cosine), cosine.last_hidden(windows), 5)
    assert (dot_ids >= 40).float().mean() > (cos_ids >= 40).float().mean()


def test_top_items_and_a_subset_agree_with_the_scores():
    model = _model(output_bias=True)
    with torch.no_grad():
        model.output_bias.normal_()
        hidden = model.last_hidden(_windows())
        scores, ids = top_items(Scorer(model), hidden, 7)
        expected = torch.topk(model.score_all(hidden), 7)
        assert torch.allclose(scores, expected.values, atol=1e-5) and torch.equal(ids, expected.indices + 1)
        subset = torch.tensor([3, 8, 20, 33, 47])
        sub_scores, sub_ids = top_among(Scorer(model), hidden, 5, subset)
        direct = model.score(hidden, subset.expand(6, 5))
        assert torch.allclose(sub_scores, torch.sort(direct, dim=1, descending=True).values, atol=1e-5)
        assert set(sub_ids.flatten().tolist()) <= set(subset.tolist())


def test_training_gradients_stay_row_sparse():
    model = _model().train()
    hidden = model(_windows(), sparse=True)[:, -1]
    model.score(hidden, torch.tensor([[4, 9, 11]]).expand(6, 3), sparse=True).sum().backward()
    assert model.item_embedding.grad is not None and model.item_embedding.grad.is_sparse


def test_negative_temperature_is_a_usage_error(tiny_dataset, tmp_path):
    result = invoke("train", str(tiny_dataset), *tiny_train_args(), "--temperature", "-1", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "--temperature" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra", [[], ["--loss", "ce", "--uniform-negatives", "0", "--batch-negatives", "0", "--topk", "0"]])
def test_cli_trains_evaluates_and_exports_a_cosine_model(tiny_dataset, tmp_path, extra):
    run = tmp_path / "run"
    trained = invoke("train", str(tiny_dataset), *tiny_train_args(), "--temperature", "0.1", *extra, "--epochs", "1", "--out", str(run), "--json")
    assert trained.exit_code == 0, trained.stderr
    assert json.loads((run / "config.json").read_text())["model"]["temperature"] == 0.1
    evaluated = invoke("evaluate", str(run), "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert 0 < json.loads(evaluated.stdout)["recall@20"] <= 1
    bundle = tmp_path / "bundle"
    assert invoke("export", str(run), "--out", str(bundle)).exit_code == 0
    raw_ids = pq.read_table(tiny_dataset / "items.parquet").column("id").to_pylist()
    lines = "".join(json.dumps({"session": i, "items": raw_ids[i : i + 5]}) + "\n" for i in range(10))
    assert invoke("recommend", str(run), input=lines).stdout == invoke("recommend", str(bundle), input=lines).stdout


def test_cosine_model_exports_to_onnx(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    assert (
        invoke("train", str(tiny_dataset), *tiny_train_args(), "--temperature", "0.07", "--epochs", "1", "--overfit-batches", "2", "--out", str(run)).exit_code
        == 0
    )
    result = invoke("export", str(run), "--out", str(tmp_path / "bundle"), "--format", "onnx")
    assert result.exit_code == 0, result.stderr  # export checks ONNX Runtime's top-k against PyTorch's before writing


@pytest.mark.parametrize(("name", "transition_weight"), [("yoochoose-1-64-cosine.json", 0.0), ("yoochoose-1-64-transitions.json", 2.0)])
def test_the_yoochoose_cosine_recipes_train(tiny_dataset, tmp_path, name, transition_weight):
    # configs/yoochoose-1-64-*.json as BENCHMARKS.md runs them, shrunk by flags to the tiny dataset
    recipe = Path(__file__).resolve().parents[1] / "configs" / name
    run = tmp_path / "run"
    result = invoke("train", str(tiny_dataset), "--config", str(recipe), *tiny_train_args(), "--epochs", "2", "--overfit-batches", "2", "--out", str(run))
    assert result.exit_code == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["temperature"] == 0.1 and config["model"]["positions"] == "left"
    assert config["train"]["lr_schedule"] == "cosine" and config["train"]["select_on"] == "mrr@20"
    assert config["train"]["transition_weight"] == transition_weight and (run / "transitions.safetensors").exists() == (transition_weight > 0)
