"""`tron tune`: a study of trials that are normal run dirs, pruning through the epoch-end callback, resuming
from its database, a best config that `tron train --config` runs, and search spaces checked before any trial."""

from __future__ import annotations

import json

import pytest

from tests.helpers import invoke

SMALL = ["--set", "device=cpu", "--set", "epochs=2", "--set", "hidden_size=8", "--set", "overfit_batches=3", "--set", "valid_limit=200"]
SPACE = """
[fixed]
uniform_negatives = 64
batch_size = 32
batch_negatives = 31
max_length = 20

[search]
lr = {low = 1e-4, high = 3e-3, log = true}
dropout = {low = 0.0, high = 0.5}
topk = [0, 32]
positions = ["left", "right"]
"""


def test_tune_runs_trials_resumes_and_writes_a_config_train_accepts(tiny_dataset, home):
    (home / "space.toml").write_text(SPACE)
    result = invoke("tune", str(tiny_dataset), "--space", "space.toml", "--trials", "3", *SMALL, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["study"] == "tune-synthetic" and summary["metric"] == "valid recall@20"
    assert [t["number"] for t in summary["trials"]] == [0, 1, 2]
    assert all(t["state"] in ("COMPLETE", "PRUNED") for t in summary["trials"])
    for trial in summary["trials"]:  # every trial a normal, finished run dir
        run = home / "runs" / f"tune-synthetic-trial-{trial['number']}"
        assert (run / "summary.json").is_file() and json.loads((run / "config.json").read_text())["train"]["select_on"] == "recall@20"
    assert "trial" in result.stderr and "best: trial" in result.stderr  # the table of trials on stderr
    best = json.loads((home / "tune" / "tune-synthetic" / "best.json").read_text())
    assert best["dataset"] == str(tiny_dataset.resolve()) and best["uniform_negatives"] == 64 and set(best) >= {"lr", "dropout", "topk", "positions"}
    assert (home / "tune" / "tune-synthetic" / "optimization_history.png").is_file()

    again = invoke("tune", str(tiny_dataset), "--space", "space.toml", "--trials", "4", *SMALL, "--json")  # resumes: one more trial
    assert again.exit_code == 0, again.stderr
    trials = json.loads(again.stdout)["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3] and trials[:3] == summary["trials"]

    trained = invoke("train", "--config", str(home / "tune" / "tune-synthetic" / "best.json"), "--epochs", "1", "--overfit-batches", "2", "--out", "runs/best")
    assert trained.exit_code == 0, trained.stderr
    plotted = invoke("plot", "--study", "tune/tune-synthetic", "--json")
    assert plotted.exit_code == 0, plotted.stderr
    complete = sum(t["state"] == "COMPLETE" for t in trials)
    expected = {"optimization_history.png"} | ({"param_importances.png"} if complete >= 2 else set())  # importances need two finished trials
    assert {p.rsplit("/", 1)[1] for p in json.loads(plotted.stdout)["outputs"]} == expected


def test_the_epoch_end_callback_prunes_a_trial_below_the_median():
    import optuna

    from tron_cli.stages.tune import _Pruning

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    good = study.ask()
    assert _Pruning(good, "recall@20", None).epoch_end({"epoch": 1, "valid": {"recall@20": 0.5}}) is False
    study.tell(good, 0.5)
    weak = study.ask()
    pruning = _Pruning(weak, "recall@20", None)
    assert pruning.epoch_end({"epoch": 1, "valid": {"recall@20": 0.1}}) is True and pruning.pruned


def test_tune_never_selects_on_test(tmp_path, home):
    assert invoke("download", "synthetic", "--sessions", "300", "--items", "50").exit_code == 0
    assert invoke("preprocess", "--no-valid").exit_code == 0
    result = invoke("tune", "data/synthetic", "--trials", "1")
    assert result.exit_code == 2 and "has no validation split, and tron tune never selects on test" in result.stderr


@pytest.mark.parametrize(
    "space,message",
    [
        ('{"search": {"hidden_sise": [8, 16]}}', "'hidden_sise' is not a tron train option"),
        ('{"search": {"lr": {"low": 0.01, "high": 0.001}}}', "needs low < high"),
        ('{"search": {"num_layers": [1, 1.5]}}', "num_layers takes int values"),
        ('{"fixed": {"lr": 0.001}, "search": {"lr": [0.1]}}', "lr is both fixed and searched"),
        ('{"search": {"dropout": "high"}}', "give a list of choices or a table"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_bad_search_space_is_refused_before_any_trial(tiny_dataset, home, space, message):
    (home / "space.json").write_text(space)
    result = invoke("tune", str(tiny_dataset), "--space", "space.json", "--trials", "1")
    assert result.exit_code in (1, 2) and message in result.stderr and "Traceback" not in result.stderr
    assert not (home / "runs").exists()


def test_the_shipped_configs_and_search_spaces_are_valid():
    from pathlib import Path

    from tron_cli.stages.tune import load_space
    from tron_cli.training.config import TrainConfig, load_config_file, validate

    configs = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(configs.glob("*.json")):
        options, extras = load_config_file(path)
        validate(TrainConfig.create(**options))
        assert extras["dataset"]
    spaces = sorted(configs.glob("*.toml"))
    assert spaces and all(load_space(path).search for path in spaces)


def test_a_combination_train_refuses_fails_that_trial_with_its_reason(tiny_dataset, home):
    (home / "space.json").write_text('{"search": {"num_heads": [3]}}')
    result = invoke("tune", str(tiny_dataset), "--space", "space.json", "--trials", "1", "--set", "hidden_size=8", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [t["state"] for t in summary["trials"]] == ["FAIL"] and "best" not in summary
    assert "must be divisible by --num-heads 3" in summary["trials"][0]["error"] and "fail" in result.stderr
