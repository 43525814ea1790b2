"""Checkpoint selection on any validation metric (`--select-on`), validation with `--exclude-seen`, and the
learning-rate schedules."""

from __future__ import annotations

import json

import pytest

from tests.helpers import invoke, tiny_train_args
from tron_cli.training.schedule import factor

FAST = [*tiny_train_args(max_length=None)]


def test_select_on_any_metric_and_cutoff_with_exclude_seen(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    args = ("--epochs", "2", "--overfit-batches", "3", "--select-on", "ndcg@10", "--exclude-seen", "--out", str(out), "--json")
    result = invoke("train", str(tiny_dataset), *FAST, *args)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert summary["selected_by"] == "valid ndcg@10"
    best = max(history, key=lambda r: r["valid"]["ndcg@10"])
    assert summary["best_epoch"] == best["epoch"] and summary["valid"]["ndcg@10"] == best["valid"]["ndcg@10"]
    plain = invoke("train", str(tiny_dataset), *FAST, *args[:4], "--out", str(tmp_path / "plain"), "--json")
    # the same run validated with the session's own clicks in the ranking scores otherwise
    assert json.loads(plain.stdout)["valid"]["recall@20"] != history[0]["valid"]["recall@20"]


@pytest.mark.parametrize("metric", ["recall", "hits@10", "mrr@0", "ndcg@ten"])
def test_a_bad_select_on_is_a_usage_error(tiny_dataset, tmp_path, metric):
    result = invoke("train", str(tiny_dataset), *FAST, "--select-on", metric, "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "is not a metric at a cutoff" in result.stderr


def test_schedule_factors():
    assert [factor("constant", s, 10, 0) for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert [factor("linear", s, 10, 0) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert factor("cosine", 0, 10, 0) == 1.0 and factor("cosine", 5, 10, 0) == pytest.approx(0.5) and factor("cosine", 10, 10, 0) == pytest.approx(0.0)
    assert [factor("cosine", s, 10, 4) for s in (0, 1, 3)] == [0.25, 0.5, 1.0]  # linear warmup first


def test_a_scheduled_run_ends_where_its_schedule_does(tiny_dataset, tmp_path):
    base = ("train", str(tiny_dataset), *FAST, "--overfit-batches", "4", "--lr", "0.002", "--lr-schedule", "linear", "--warmup-steps", "2")
    out = tmp_path / "run"
    assert invoke(*base, "--epochs", "2", "--out", str(out)).exit_code == 0
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    groups = [group for optimizer in state["optimizers"] for group in optimizer["param_groups"]]
    assert all(group["lr"] == pytest.approx(0.0, abs=1e-12) for group in groups)  # 8 steps of 8 done: linear decay reached 0
