"""The daily loop's first two steps: `tron preprocess --catalogue-from` keeps item ids across datasets, and
`tron train --init-from` warm-starts from a parent whose catalogue is a prefix of the dataset's (every model with
an item table, with --resume and with DDP). The refusals (unrelated catalogues, other settings, not a prefix)
are cases of test_bad_input.py."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import TINY_GRU, invoke, tiny_train_args
from tron_cli.artifacts.sessions import read_sessions

MODELS = {
    "sasrec": tiny_train_args(epochs=1, overfit_batches=2),
    "gru4rec": tiny_train_args(**{**TINY_GRU, "overfit_batches": 2}),
    "multitron": tiny_train_args(objective="multitron", batch_negatives=None, epochs=1, overfit_batches=2),
}


def _day(path: Path, sessions: list[list[object]], day: int) -> Path:
    """A CSV log: session s of `sessions` clicks its items an hour apart from s hours into day `day`."""
    start = 1_700_000_000 + day * 86_400
    rows = [f"{day * 1000 + s},{item},{start + s * 600 + k}" for s, items in enumerate(sessions) for k, item in enumerate(items)]
    path.write_text("session,item,ts\n" + "\n".join(rows) + "\n")
    return path


def _preprocess(log: Path, name: str, *extra: str) -> dict:
    args = ["--train", str(log), "--time-unit", "s", "--test-days", "0.05", "--no-valid", "--name", name]
    result = invoke("preprocess", *args, *extra, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _catalogue(dataset: Path) -> tuple[list, list]:
    table = pq.read_table(dataset / "items.parquet")
    return table.column("id").to_pylist(), table.column("count").to_pylist()


def test_catalogue_from_keeps_ids_appends_new_items_and_keeps_absent_ones(home):
    _preprocess(_day(home / "monday.csv", [[30, 10, 20], [10, 40, 30]] * 10, day=0), "monday")
    assert _catalogue(home / "data" / "monday")[0] == [10, 20, 30, 40]  # sorted raw ids, as without lineage
    tuesday = _day(home / "tuesday.csv", [[20, 50, 5], [5, 40, 50]] * 10, day=1)  # 10 and 30 gone, 5 and 50 new
    summary = _preprocess(tuesday, "tuesday", "--catalogue-from", "monday")
    ids, counts = _catalogue(home / "data" / "tuesday")
    assert ids == [10, 20, 30, 40, 5, 50]  # monday's ids first, unchanged; new items after them in raw-id order
    assert counts[0] == counts[2] == 0 and min(counts[1], counts[3], counts[4], counts[5]) > 0  # absent today: today's count
    info = json.loads((home / "data" / "tuesday" / "dataset.json").read_text())
    monday = json.loads((home / "data" / "monday" / "dataset.json").read_text())
    assert info["catalogue_from"] == summary["catalogue_from"] == json.loads(invoke("info", "data/tuesday", "--json").stdout)["catalogue_from"]
    assert {k: info["catalogue_from"][k] for k in ("kind", "catalogue_sha256", "n_items", "kept", "unseen", "new")} == {
        "kind": "dataset",
        "catalogue_sha256": monday["catalogue_sha256"],
        "n_items": 4,
        "kept": 2,
        "unseen": 2,
        "new": 2,
    }
    sessions = read_sessions(home / "data" / "tuesday" / "train.parquet")  # the clicks read back as the log's raw ids
    assert [ids[i - 1] for i in sessions.items[: sessions.offsets[2]]] == [20, 50, 5, 5, 40, 50]
    plain = _preprocess(tuesday, "plain")  # without the flag nothing changes: tuesday's own sorted ids
    assert _catalogue(home / "data" / "plain")[0] == [5, 20, 40, 50] and "catalogue_from" not in plain
    assert "catalogue_from" not in json.loads((home / "data" / "plain" / "dataset.json").read_text())


def test_a_run_or_a_bundle_gives_its_catalogue(tiny_model, tiny_dataset, home):
    run, bundle = tiny_model
    raw = tiny_dataset.parent / "raw" / "synthetic"
    expected = json.loads((tiny_dataset / "dataset.json").read_text())["catalogue_sha256"]
    for kind, parent in (("run", run), ("bundle", bundle)):
        result = invoke("preprocess", "synthetic", "--input", str(raw), "--name", kind, "--catalogue-from", str(parent), "--json")
        assert result.exit_code == 0, result.stderr
        lineage = json.loads(result.stdout)["catalogue_from"]
        assert lineage["kind"] == kind and lineage["new"] == 0 and lineage["unseen"] == 0
        assert json.loads((home / "data" / kind / "dataset.json").read_text())["catalogue_sha256"] == expected  # the same log: the same catalogue


@pytest.fixture(scope="module")
def parents(tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parents")
    out = {}
    for name, args in MODELS.items():
        out[name] = root / name
        result = invoke("train", str(tiny_dataset), *args, "--out", str(out[name]))
        assert result.exit_code == 0, result.stderr
    return out


def _recommend(model: Path, sessions: list[list[int]], *extra: str) -> list[dict]:
    lines = "".join(json.dumps({"session": s, "items": items}) + "\n" for s, items in enumerate(sessions))
    result = invoke("recommend", str(model), "-k", "10", "--device", "cpu", *extra, input=lines)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_no_new_items_and_learning_rate_0_scores_exactly_like_the_parent(parents, tiny_dataset, tmp_path):
    child = tmp_path / "child"
    result = invoke("train", str(tiny_dataset), *MODELS["sasrec"], "--lr", "0", "--init-from", str(parents["sasrec"]), "--out", str(child))
    assert result.exit_code == 0, result.stderr
    assert "warm start from" in result.stderr and "no new item" in result.stderr
    assert json.loads((child / "config.json").read_text())["init_from"]["new_items"] == 0
    assert json.loads(invoke("info", str(child), "--json").stdout)["config"]["init_from"]["name"] == "sasrec"  # the parent, as tron info shows it
    mine, theirs = load_file(child / "model.safetensors"), load_file(parents["sasrec"] / "model.safetensors")
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[name], theirs[name]) for name in mine)
    metrics = [json.loads(invoke("evaluate", str(run), "--device", "cpu", "--json").stdout) for run in (child, parents["sasrec"])]
    assert metrics[0]["recall@20"] == metrics[1]["recall@20"] and metrics[0]["mrr@20"] == metrics[1]["mrr@20"] and metrics[0]["n_targets"] > 0
    sessions = [[3, 4, 3], [17, 5], [250]]
    assert _recommend(child, sessions) == _recommend(parents["sasrec"], sessions)


@pytest.mark.parametrize("model", list(MODELS))
def test_known_items_score_as_in_the_parent_at_step_0_and_new_rows_start_at_the_mean_plus_initial_noise(model, parents, tiny_dataset, grown, tmp_path):
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    result = invoke("train", str(grown), *MODELS[model], "--lr", "0", "--init-from", str(parents[model]), "--out", str(warm))
    assert result.exit_code == 0, result.stderr
    known, n_items = (json.loads((data / "dataset.json").read_text())["n_items"] for data in (tiny_dataset, grown))
    assert f"{n_items - known} new items start from the mean" in result.stderr
    assert invoke("train", str(grown), *MODELS[model], "--lr", "0", "--out", str(cold)).exit_code == 0  # learning rate 0: its initial weights
    mine, initial, theirs = (load_file(run / "model.safetensors") for run in (warm, cold, parents[model]))
    for name, parent in theirs.items():
        if mine[name].shape == parent.shape:
            assert torch.equal(mine[name], parent), name
        else:  # an item table: the parent's rows (padding and its items), then the new items'
            assert mine[name].shape[0] == n_items + 1 and torch.equal(mine[name][: known + 1], parent), name
            torch.testing.assert_close(mine[name][known + 1 :], initial[name][known + 1 :] + parent[1:].mean(0))
    allow = tmp_path / "known.txt"
    allow.write_text("".join(f"{item}\n" for item in _catalogue(tiny_dataset)[0]))
    sessions = [[3, 4, 3], [17, 5], [250, 11, 12]]
    extra = ["--allow", str(allow), *(["--order-weight", "0.3"] if model == "multitron" else [])]
    for a, b in zip(_recommend(warm, sessions, *extra), _recommend(parents[model], sessions, *extra)):
        assert a["items"] == b["items"] and a["scores"] == pytest.approx(b["scores"], rel=1e-5)


def test_a_warm_start_resumes_exactly_even_when_killed_before_its_first_checkpoint(parents, grown, tmp_path):
    args = [str(grown), *tiny_train_args(epochs=2, overfit_batches=2, shuffle="shuffle_without_replacement"), "--init-from", str(parents["sasrec"])]
    whole, split, killed = tmp_path / "whole", tmp_path / "split", tmp_path / "killed"
    assert invoke("train", *args, "--out", str(whole)).exit_code == 0
    assert invoke("train", *args, "--epochs", "1", "--out", str(split)).exit_code == 0
    result = invoke("train", "--resume", str(split), "--epochs", "2")
    assert result.exit_code == 0, result.stderr
    killed.mkdir()
    (killed / "config.json").write_bytes((whole / "config.json").read_bytes())  # stopped before any epoch ended
    result = invoke("train", "--resume", str(killed))
    assert result.exit_code == 0, result.stderr
    assert "warm start from" in result.stderr
    expected = load_file(whole / "checkpoint" / "weights.safetensors")
    for run in (split, killed):
        got = load_file(run / "checkpoint" / "weights.safetensors")
        assert all(torch.equal(got[name], expected[name]) for name in expected), run


def test_two_processes_warm_start_as_one_does(tiny_dataset, grown, tmp_path):
    common = tiny_train_args(batch_size=None, batch_negatives=0, dropout=0, seed=3, epochs=1, overfit_batches=3, shuffle="shuffle_without_replacement")
    parent = tmp_path / "parent"
    assert invoke("train", str(tiny_dataset), *common, "--batch-size", "16", "--out", str(parent)).exit_code == 0
    runs = {}
    for devices, batch in (("2", "8"), ("1", "16")):
        runs[devices] = tmp_path / devices
        args = [str(grown), *common, "--batch-size", batch, "--devices", devices, "--init-from", str(parent), "--out", str(runs[devices])]
        result = invoke("train", *args)
        assert result.exit_code == 0, result.stderr
    two, one, start = (load_file(run / "model.safetensors") for run in (runs["2"], runs["1"], parent))
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=3 * 5e-4, rtol=0)  # as test_distributed: Adam's noise x 3 steps
    moved = (one["blocks.0.qkv.weight"] - start["blocks.0.qkv.weight"]).abs().max()
    assert 0 < moved < 0.01  # three Adam steps from the parent, not a fresh initialisation away from it
    losses = [json.loads((run / "history.jsonl").read_text().splitlines()[0])["loss"] for run in runs.values()]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
