"""`tron train --track mlflow --track tensorboard`: the records read back with each library's own reader
equal history.jsonl; `tron evaluate` adds its metrics; nothing is imported unless asked for."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import invoke, tiny_train_args

FAST = [*tiny_train_args(max_length=None)]


@pytest.fixture(scope="module")
def tracked_run(tiny_dataset, tmp_path_factory):
    home = tmp_path_factory.mktemp("tracked")
    mp = pytest.MonkeyPatch()
    mp.setenv("TRON_HOME", str(home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        run = home / "runs" / "tracked"
        result = invoke(
            "train", str(tiny_dataset), *FAST, "--epochs", "2", "--overfit-batches", "4", "--track", "mlflow", "--track", "tensorboard", "--out", str(run)
        )
        assert result.exit_code == 0, result.stderr
        evaluated = invoke("evaluate", str(run), "--json", "-k", "20")
        assert evaluated.exit_code == 0, evaluated.stderr
    finally:
        mp.undo()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return home, run, history, json.loads(evaluated.stdout)


def test_mlflow_records_params_epochs_summary_artifacts_and_the_evaluation(tracked_run):
    from mlflow.tracking import MlflowClient

    home, run, history, metrics = tracked_run
    kept = json.loads((run / "tracking.json").read_text())["mlflow"]
    assert kept["tracking_uri"] == f"sqlite:///{home.resolve() / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=kept["tracking_uri"])
    record = client.get_run(kept["run_id"])
    assert record.info.status == "FINISHED" and record.info.run_name == "tracked"
    assert record.data.params["model.hidden_size"] == "16" and record.data.params["dataset.name"] == "synthetic"
    assert record.data.params["train.uniform_negatives"] == "64" and record.data.params["train.epochs"] == "2"
    for key, field in (("loss", None), ("valid/recall_at_20", "recall@20"), ("valid/mrr_at_20", "mrr@20"), ("sessions_per_s", None)):
        logged = sorted(client.get_metric_history(kept["run_id"], key), key=lambda m: m.step)
        expected = [r["valid"][field] if field else r[key] for r in history]
        assert [m.step for m in logged] == [r["epoch"] for r in history]
        assert [m.value for m in logged] == pytest.approx(expected, rel=1e-12)
    assert record.data.metrics["summary/valid/recall_at_20"] == pytest.approx(max(r["valid"]["recall@20"] for r in history))
    assert record.data.metrics["test/recall_at_20"] == pytest.approx(metrics["recall@20"], rel=1e-12)
    assert {a.path for a in client.list_artifacts(kept["run_id"])} >= {"config.json", "history.jsonl", "training.png"}


def test_tensorboard_event_files_hold_the_same_numbers(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run, history, metrics = tracked_run
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"loss", "valid/recall_at_20", "valid/mrr_at_20", "events_per_s", "test/recall_at_20"} <= set(scalars)
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [r["epoch"] for r in history]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in history], rel=1e-6)  # TensorBoard keeps float32
    assert [e.value for e in events.Scalars("valid/recall_at_20")] == pytest.approx([r["valid"]["recall@20"] for r in history], rel=1e-6)
    assert events.Scalars("test/recall_at_20")[-1].value == pytest.approx(metrics["recall@20"], rel=1e-6)


def test_a_missing_tracker_library_is_one_line_with_the_extra_to_install(tiny_dataset, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    monkeypatch.setenv("TRON_TRACK", "mlflow")
    result = invoke("train", str(tiny_dataset), *FAST, "--epochs", "1", "--overfit-batches", "1", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert "--track mlflow needs mlflow, which is not installed. Run: pip install 'tron-cli[mlflow]'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_nothing_is_imported_when_no_tracker_is_asked_for(tiny_dataset, tmp_path):
    script = (
        "import sys\nfrom click.testing import CliRunner\nfrom tron_cli.cli import cli\n"
        f"r = CliRunner().invoke(cli, ['train', {str(tiny_dataset)!r}, *{FAST!r}, '--epochs', '1', '--overfit-batches', '1', '--out', {str(tmp_path / 'run')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('mlflow', 'tensorboard', 'optuna') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
