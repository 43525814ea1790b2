"""The `tron` command as a shell citizen: zero-argument chaining, stdout is data, global options, precedence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest

from tests.helpers import invoke, tiny_train_args

SMALL_TRAINING = {
    "TRON_TRAIN_DEVICE": "cpu",
    "TRON_TRAIN_HIDDEN_SIZE": "16",
    "TRON_TRAIN_UNIFORM_NEGATIVES": "64",
    "TRON_TRAIN_BATCH_SIZE": "32",
    "TRON_TRAIN_BATCH_NEGATIVES": "31",
    "TRON_TRAIN_TOPK": "32",
    "TRON_TRAIN_MAX_LENGTH": "20",
    "TRON_TRAIN_EPOCHS": "1",
}


@pytest.fixture
def run(tiny_model, tmp_path) -> Path:
    """A private copy of the shared tiny run: `tron evaluate` writes metrics.json into the run it evaluates."""
    return shutil.copytree(tiny_model[0], tmp_path / "own-run")


def test_the_chain_runs_with_no_arguments_in_an_empty_directory(home, monkeypatch):
    """download -> preprocess -> train -> evaluate -> export -> recommend, each finding the one before."""
    for name, value in SMALL_TRAINING.items():  # options from TRON_* variables: the command lines stay bare
        monkeypatch.setenv(name, value)
    assert invoke("download", "synthetic", "--sessions", "1500", "--items", "200").exit_code == 0
    for command in (["preprocess"], ["train"], ["evaluate"], ["export"]):
        result = invoke(*command)
        assert result.exit_code == 0, (command, result.stderr)
        assert result.stdout == "", command  # without --json, nothing but data reaches stdout: here none
    assert [p.name for p in (home / "runs").iterdir()] == ["synthetic-sasrec-1"]
    assert (home / "bundles" / "synthetic-sasrec-1" / "model.safetensors").is_file()
    config = json.loads((home / "runs" / "synthetic-sasrec-1" / "config.json").read_text())
    assert config["model"]["hidden_size"] == 16 and config["train"]["epochs"] == 1
    result = invoke("recommend", "-k", "5", input='{"session": 7, "items": [0, 1, 2]}\n')
    assert result.exit_code == 0, result.stderr
    line = json.loads(result.stdout)
    assert line["session"] == 7 and len(line["items"]) == 5


@pytest.mark.parametrize(
    "command, first",
    [
        (["preprocess"], "tron download"),
        (["train"], "tron preprocess"),
        (["evaluate"], "tron train"),
        (["export"], "tron train"),
        (["recommend"], "tron train"),
        (["plot"], "tron train"),
    ],
)
def test_a_stage_with_nothing_to_work_on_says_what_to_run_first(home, command, first):
    result = invoke(*command, input="")
    assert result.exit_code == 1
    assert first in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_every_reporting_command_prints_one_json_object(tiny_dataset, tiny_model, run, home, tmp_path):
    bundle = tiny_model[1]
    commands = [
        ["download", "synthetic", "--sessions", "300", "--items", "50", "--json"],
        ["preprocess", "--json", "--name", "other"],
        [
            "train",
            str(tiny_dataset),
            *tiny_train_args(hidden_size=8, uniform_negatives=16, batch_size=16, batch_negatives=15, topk=8, max_length=None, epochs=1, overfit_batches=1),
            "--out",
            str(tmp_path / "r"),
            "--json",
        ],
        ["evaluate", str(run), "--json", "-k", "20"],
        ["evaluate", "--baseline", "popular", "--data", str(tiny_dataset), "--json"],
        ["export", str(run), "--out", str(tmp_path / "b"), "--json"],
        ["plot", str(run), "-o", str(tmp_path / "p.png"), "--json"],
    ]
    for command in commands:
        result = invoke(*command)
        assert result.exit_code == 0, (command, result.stderr)
        assert isinstance(json.loads(result.stdout), dict), command  # exactly one JSON object, nothing else
    result = invoke("recommend", str(bundle), "-k", "3", input='{"session": 1, "items": [1, 2]}\n{"session": 2, "items": [3]}\n')
    assert [json.loads(line)["session"] for line in result.stdout.splitlines()] == [1, 2]  # records, one per line


def test_version_and_help_mention_exit_codes():
    from tron_cli import __version__

    assert invoke("--version").stdout.strip().endswith(__version__)
    help_text = invoke("--help").stdout
    assert "Exit codes" in help_text and "130" in help_text
    for command in ("download", "preprocess", "train", "evaluate", "export", "recommend", "plot", "completion"):
        text = invoke(command, "--help").stdout
        assert "Example" in text or "eval " in text, command  # every command shows how it is used


def test_help_shows_only_ranges_a_user_can_read():
    from tron_cli.cli import cli

    for name in cli.list_commands(click.Context(cli)):
        text = invoke(name, "--help").stdout
        assert "None" not in text and "9223372036854775807" not in text, name  # click's "x<=None", int64's bounds


def test_quiet_keeps_the_result_and_quieter_hides_it(run):
    assert "Recall" in invoke("evaluate", str(run)).stderr
    assert "Recall" in invoke("-q", "evaluate", str(run)).stderr  # -q hides progress and chatter, never the metrics
    assert invoke("-qq", "evaluate", str(run)).stderr == ""  # -qq: only errors


def test_colour_follows_the_flag_and_no_color(run, monkeypatch):
    assert "\x1b[" in invoke("--color", "always", "evaluate", str(run)).stderr
    assert "\x1b[" not in invoke("--color", "never", "evaluate", str(run)).stderr
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in invoke("evaluate", str(run)).stderr


def test_flags_beat_environment_beat_config_file_beat_defaults(tiny_dataset, tmp_path, monkeypatch):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"max_epochs": 3, "hidden_size": 24, "dropout": 0.3, "batch_size": 32}))
    monkeypatch.setenv("TRON_TRAIN_HIDDEN_SIZE", "8")
    monkeypatch.setenv("TRON_TRAIN_DROPOUT", "0.1")
    out = tmp_path / "run"
    args = [
        "train",
        str(tiny_dataset),
        "--config",
        str(config),
        "--dropout",
        "0.2",
        "--device",
        "cpu",
        "--uniform-negatives",
        "16",
        "--batch-negatives",
        "15",
        "--topk",
        "8",
        "--overfit-batches",
        "1",
        "--out",
        str(out),
    ]
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    document = json.loads((out / "config.json").read_text())
    train, model = document["train"], document["model"]
    assert model["dropout"] == 0.2  # flag over environment over file
    assert model["hidden_size"] == 8  # environment over file
    assert train["epochs"] == 3  # file over default
    assert model["num_layers"] == 2  # default
