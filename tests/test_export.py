"""`tron export`: the bundle's files against the run and its dataset, refusals, and ONNX graphs re-checked here
with onnxruntime against the PyTorch model itself (not through the export's own check)."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.helpers import TINY_GRU, invoke, tiny_train_args

GRU = tiny_train_args(**TINY_GRU)


@pytest.fixture(scope="module")
def sasrec_run(tiny_model):
    """The shared small SASRec run (max_length 20); read only."""
    return tiny_model[0]


@pytest.fixture(scope="module")
def gru_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny-gru4rec"
    result = invoke("train", str(tiny_dataset), *GRU, "--out", str(out))
    assert result.exit_code == 0, result.stderr
    return out


def _load(run):
    from tron_cli.modelio import load_model

    return load_model(run)[0]


def _left_padded(n_items: int, batch: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    items = rng.integers(1, n_items + 1, (batch, width))
    lengths = rng.integers(1, width + 1, batch)
    lengths[0] = width  # one full row
    return np.where(np.arange(width)[None, :] >= (width - lengths)[:, None], items, 0).astype(np.int64)


def _reference(model, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of the top k + 1 items, one session at a time, straight from the model (padding removed)."""
    ids, scores = [], []
    with torch.no_grad():
        for row in items:
            session = torch.from_numpy(row[row != 0])[None]
            hidden = model.last_hidden(session)
            values, index = torch.topk(model.score_all(hidden)[0], k + 1)
            ids.append(index.numpy() + 1)
            scores.append(values.numpy())
    return np.array(ids), np.array(scores)


def _assert_same_top_k(ids, scores, ref_ids, ref_scores, tolerance=1e-4):
    k = ids.shape[1]
    np.testing.assert_allclose(scores, ref_scores[:, :k], atol=tolerance, rtol=1e-5)
    close = np.abs(np.diff(ref_scores, axis=1)) <= tolerance
    tied = np.zeros(ref_scores.shape, dtype=bool)
    tied[:, :-1] |= close
    tied[:, 1:] |= close
    assert np.all((ids == ref_ids[:, :k]) | tied[:, :k])
    assert ids.min() >= 1


def _check_onnx(path, model, max_length):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("items", "tensor(int64)"), ("k", "tensor(int64)")]
    assert [(o.name, o.type) for o in session.get_outputs()] == [("indices", "tensor(int64)"), ("scores", "tensor(float)")]
    for batch, width, seed in [(1, max_length - 7, 1), (7, max_length - 3, 2), (7, 2, 3)]:
        items = _left_padded(model.n_items, batch, width, seed)
        ids, scores = session.run(None, {"items": items, "k": np.array(15, dtype=np.int64)})
        assert ids.shape == scores.shape == (batch, 15)
        assert np.all(np.diff(scores, axis=1) <= 0)
        _assert_same_top_k(ids, scores, *_reference(model, items, 15))


# --------------------------------------------------------------------------------------------- safetensors


def test_bundle_holds_the_runs_weights_and_the_datasets_catalogue(sasrec_run, tiny_dataset, tmp_path):
    out = tmp_path / "bundle"
    result = invoke("export", str(sasrec_run), "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert set(printed) == {"bundle", "files", "format"} and printed["format"] == "safetensors"
    assert printed["files"] == ["config.json", "items.parquet", "model.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == printed["files"]
    config = json.loads((out / "config.json").read_text())
    run = json.loads((sasrec_run / "config.json").read_text())
    dataset = json.loads((tiny_dataset / "dataset.json").read_text())
    assert config["schema"] == "bundle/1"
    assert config["model"] == run["model"] and config["max_length"] == 20
    assert config["n_items"] == dataset["n_items"] and config["catalogue_sha256"] == dataset["catalogue_sha256"]
    assert config["item_id_type"] == "int64" and config["dataset"] == dataset["name"] and config["run"]["name"] == run["name"]
    assert pq.read_table(out / "items.parquet").equals(pq.read_table(tiny_dataset / "items.parquet"))
    from safetensors.torch import load_file

    ours, theirs = load_file(out / "model.safetensors"), load_file(sasrec_run / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[name], theirs[name]) for name in ours)


def test_default_out_existing_bundle_and_force(sasrec_run, home):
    result = invoke("export", str(sasrec_run))
    assert result.exit_code == 0, result.stderr
    bundle = home / "bundles" / sasrec_run.name
    assert (bundle / "config.json").is_file() and result.stdout == ""
    again = invoke("export", str(sasrec_run))
    assert again.exit_code == 2 and "exists already" in again.stderr and "--force" in again.stderr
    forced = invoke("export", str(sasrec_run), "--force")
    assert forced.exit_code == 0, forced.stderr
    assert [p.name for p in (home / "bundles").iterdir()] == [sasrec_run.name]  # no temporary dir left behind


def test_unfinished_run_is_refused(sasrec_run, tmp_path):
    run = tmp_path / "unfinished"
    shutil.copytree(sasrec_run, run)
    (run / "summary.json").unlink()
    result = invoke("export", str(run), "--out", str(tmp_path / "bundle"))
    assert result.exit_code == 1
    assert "not finished" in result.stderr and f"tron train --resume {run}" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "bundle").exists()


def test_onnx_needs_the_extra(sasrec_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    result = invoke("export", str(sasrec_run), "--out", str(tmp_path / "bundle"), "--format", "onnx")
    assert result.exit_code == 1 and "pip install 'tron-cli[onnx]'" in result.stderr
    assert not (tmp_path / "bundle").exists()


# --------------------------------------------------------------------------------------------- ONNX


def test_sasrec_onnx_matches_pytorch(sasrec_run, tmp_path):
    out = tmp_path / "bundle"
    result = invoke("export", str(sasrec_run), "--out", str(out), "--format", "onnx", "--json")
    assert result.exit_code == 0, result.stderr
    assert "model.onnx" in json.loads(result.stdout)["files"]
    config = json.loads((out / "config.json").read_text())
    assert config["onnx"]["exporter"] == "dynamo" and config["onnx"]["opset"] >= 17
    _check_onnx(out / "model.onnx", _load(sasrec_run), max_length=20)


@pytest.mark.parametrize("settings", [["--positions", "left"], ["--positions", "left", "--block", "sasrec", "--init", "normal"]], ids=["left", "sasrec-block"])
def test_left_position_sasrec_exports_to_onnx(tiny_dataset, tmp_path, settings):
    run, out = tmp_path / "run", tmp_path / "bundle"
    assert invoke("train", str(tiny_dataset), *tiny_train_args(), *settings, "--epochs", "1", "--overfit-batches", "2", "--out", str(run)).exit_code == 0
    result = invoke("export", str(run), "--out", str(out), "--format", "onnx")
    assert result.exit_code == 0, result.stderr
    _check_onnx(out / "model.onnx", _load(run), max_length=20)


def test_gru4rec_onnx_handles_left_padding(gru_run, tmp_path):
    out = tmp_path / "bundle"
    result = invoke("export", str(gru_run), "--out", str(out), "--format", "onnx")
    assert result.exit_code == 0, result.stderr
    # the reference feeds each session unpadded: padding inside the graph must not reach the GRU's state
    _check_onnx(out / "model.onnx", _load(gru_run), max_length=20)


def test_torchscript_fallback_and_a_failed_check_writes_nothing(sasrec_run, tmp_path, monkeypatch):
    import tron_cli.stages.export as export

    def broken(*args, **kwargs):
        raise RuntimeError("dynamo cannot export this")

    monkeypatch.setattr(export, "_export_dynamo", broken)
    out = tmp_path / "bundle"
    result = invoke("export", str(sasrec_run), "--out", str(out), "--format", "onnx")
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["onnx"]["exporter"] == "torchscript"
    _check_onnx(out / "model.onnx", _load(sasrec_run), max_length=20)

    monkeypatch.setattr(export, "same_top_k", lambda *args, **kwargs: False)
    failed = tmp_path / "failed"
    result = invoke("export", str(sasrec_run), "--out", str(failed), "--format", "onnx")
    assert result.exit_code == 1 and "differs from PyTorch" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # neither the bundle nor its temporary dir
