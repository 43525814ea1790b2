"""The first ten minutes of a new user: their own log on the first try, options where they type them, defaults
that fit the data and the machine, knowing what is under $TRON_HOME, and the small things that look broken."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import invoke, tiny_train_args

TINY_TRAINING = [*tiny_train_args(batch_size=None, batch_negatives=None, epochs=1)]
TINY_TRAINING += ["--overfit-batches", "1", "--batch-size", "32"]
DAY = 86_400


def _events(days: int = 10, sessions_per_day: int = 30) -> list[tuple[int, int, int]]:
    """(session, item, unix seconds) rows of a small log over `days` days, three clicks a session."""
    rows = []
    for session in range(days * sessions_per_day):
        start = 1_700_000_000 + session * DAY // sessions_per_day
        rows += [(session, (session * 7 + click * 3) % 40 + 1, start + 60 * click) for click in range(3)]
    return rows


def _table(rows, names=("session_id", "item_id", "timestamp")) -> pa.Table:
    return pa.table({name: [row[i] for row in rows] for i, name in enumerate(names)})


def _text(rows, names=("session_id", "item_id", "timestamp"), separator=",") -> str:
    return "\n".join([separator.join(names)] + [separator.join(map(str, row)) for row in rows]) + "\n"


def _jsonl(rows, names=("session_id", "item_id", "timestamp")) -> str:
    return "".join(json.dumps(dict(zip(names, row))) + "\n" for row in rows)


def _otto(rows) -> str:
    sessions: dict[int, list[dict[str, Any]]] = {}
    for session, item, ts in rows:
        sessions.setdefault(session, []).append({"aid": item, "ts": ts * 1000, "type": "clicks"})
    return "".join(json.dumps({"session": s, "events": events}) + "\n" for s, events in sessions.items())


def _write(path: Path, content: str | bytes) -> Path:
    data = content.encode() if isinstance(content, str) else content
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        with pa.CompressedOutputStream(str(path), "zstd") as out:
            out.write(data)
        return path
    path.write_bytes(data)
    return path


def _preprocess(*args: str):
    result = invoke("preprocess", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stderr


# --------------------------------------------------------------------------------------------- 1. your own log


@pytest.mark.parametrize(
    "name, content, fmt",
    [
        ("clicks.csv", lambda rows: _text(rows), "csv"),
        ("clicks.tsv", lambda rows: _text(rows, separator="\t"), "tsv"),
        ("clicks.csv.gz", lambda rows: _text(rows), "csv"),
        ("clicks.tsv.zst", lambda rows: _text(rows, separator="\t"), "tsv"),
        ("clicks.parquet", None, "parquet"),
        ("clicks.jsonl", lambda rows: _jsonl(rows), "jsonl"),
        ("clicks.ndjson.gz", lambda rows: _jsonl(rows), "jsonl"),
        ("clicks.jsonl.zst", lambda rows: _otto(rows), "otto-jsonl"),
        ("semicolons.csv", lambda rows: _text(rows, separator=";"), "csv"),  # the separator is sniffed from the header
    ],
)
def test_own_log_is_read_by_its_name_with_its_columns_recognised(home, name, content, fmt):
    rows = _events()
    if content is None:
        pq.write_table(_table(rows), home / name)
    else:
        _write(home / name, content(rows))
    summary, stderr = _preprocess("--train", name)
    assert summary["name"] == name.split(".")[0] and summary["n_items"] == 40
    info = json.loads((Path(summary["dataset"]) / "dataset.json").read_text())
    assert info["source"]["format"] == fmt
    if fmt != "otto-jsonl":  # a table's columns are recognised by name, and the user is told which
        assert info["parameters"]["columns"] == {"session": "session_id", "item": "item_id", "time": "timestamp"}
        assert "session_id (session), item_id (item), timestamp (time)" in stderr and "--session-col" in stderr
    # the same events in any format make the same dataset
    assert summary["train"]["events"] + summary["valid"]["events"] + summary["test"]["events"] == len(rows)


def test_format_flag_overrides_the_name_and_otto_jsonl_still_works(home):
    rows = _events(days=3)
    _write(home / "log.txt", _text(rows, names=("session", "item", "ts")))
    summary, _ = _preprocess("--train", "log.txt", "--format", "csv")
    assert summary["n_items"] == 40
    _write(home / "otto.data", _otto(rows))
    summary, _ = _preprocess("--train", "otto.data", "--format", "otto-jsonl")
    assert summary["n_items"] == 40
    unknown = invoke("preprocess", "--train", "log.txt")
    assert unknown.exit_code == 2 and "--format" in unknown.stderr and "log.txt" in unknown.stderr


def test_columns_it_cannot_tell_are_listed_with_the_flags_that_pick_them(home):
    _write(home / "odd.csv", _text(_events(days=2), names=("visitor", "product", "when")))
    result = invoke("preprocess", "--train", "odd.csv")
    assert result.exit_code == 1 and result.stdout == ""
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("Error: ")
    assert "visitor, product, when" in line and "--session-col" in line and "--time-col" in line
    assert "--item-col" not in line  # "product" is a common name for the item: only the unknown two are asked for
    summary, stderr = _preprocess("--train", "odd.csv", "--session-col", "visitor", "--time-col", "when")
    assert summary["n_items"] == 40 and "product (item)" in stderr


def test_two_candidates_for_one_column_are_ambiguous_until_a_flag_picks_one(home):
    rows = [(s, i, t, t + 5) for s, i, t in _events(days=2)]
    _write(home / "log.csv", _text(rows, names=("session", "item", "time", "timestamp")))
    result = invoke("preprocess", "--train", "log.csv")
    assert result.exit_code == 1 and "several could be: time, timestamp" in result.stderr
    summary, _ = _preprocess("--train", "log.csv", "--time-col", "timestamp")
    info = json.loads((Path(summary["dataset"]) / "dataset.json").read_text())
    assert info["parameters"]["columns"]["time"] == "timestamp"


def test_own_logs_get_a_validation_split_by_default_and_say_which(home):
    _write(home / "long.csv", _text(_events(days=10)))  # 9 days of train: the day before the test day validates
    summary, stderr = _preprocess("--train", "long.csv")
    info = json.loads((Path(summary["dataset"]) / "dataset.json").read_text())
    assert info["splits"] == ["train", "valid", "test"] and info["parameters"]["valid_days"] == 1.0
    assert "validation: the last 1 day of train" in stderr and "--no-valid" in stderr
    assert 25 <= summary["valid"]["sessions"] <= 35  # one day's sessions

    _write(home / "short.csv", _text(_events(days=3)))  # too short for a day: the last tenth of train
    summary, stderr = _preprocess("--train", "short.csv")
    assert "validation: the last 10% of train" in stderr
    assert summary["valid"]["sessions"] == round((summary["train"]["sessions"] + summary["valid"]["sessions"]) * 0.1)

    summary, _ = _preprocess("--train", "short.csv", "--no-valid", "--name", "none")
    assert "valid" not in summary and json.loads((home / "data" / "none" / "dataset.json").read_text())["splits"] == ["train", "test"]


def test_a_log_too_small_to_validate_on_is_kept_whole_with_a_warning(home):
    rows = [(session, item, 1_700_000_000 + session * DAY // 2 + item) for session in range(4) for item in (1, 2, 3)]  # 4 sessions over 2 days
    _write(home / "tiny.csv", _text(rows))
    summary, stderr = _preprocess("--train", "tiny.csv")
    assert "valid" not in summary and "too few to carve a validation split" in stderr


def test_quiet_after_the_subcommand_hides_the_chatter_but_not_the_table(home):
    _write(home / "clicks.csv", _text(_events(days=3)))
    result = invoke("preprocess", "--train", "clicks.csv", "-q")
    assert result.exit_code == 0, result.stderr
    assert "sessions" in result.stderr and "columns" not in result.stderr and "validation:" not in result.stderr


# --------------------------------------------------------------------------------------------- 2. options where users type them


@pytest.fixture
def own_run(tiny_model, tmp_path) -> Path:
    return shutil.copytree(tiny_model[0], tmp_path / "own-run")


def test_global_options_work_after_the_subcommand(own_run):
    assert "Recall" in invoke("evaluate", str(own_run), "-q").stderr  # -q keeps the result
    assert invoke("evaluate", str(own_run), "-qq").stderr == ""
    assert invoke("-q", "evaluate", str(own_run), "-q").stderr == ""  # before and after add up
    assert "\x1b[" in invoke("evaluate", str(own_run), "--color", "always").stderr
    assert "\x1b[" not in invoke("--color", "always", "evaluate", str(own_run), "--color", "never").stderr  # the later one wins
    shown = invoke("evaluate", str(own_run), "--color", "always").stderr
    assert "evaluating" in shown  # a forced terminal draws the progress bar ...
    assert "evaluating" not in invoke("evaluate", str(own_run), "--color", "always", "--no-progress").stderr  # ... unless told not to
    help_text = invoke("train", "--help").stdout
    assert "-q, --quiet" in help_text and "--no-progress" in help_text


def test_train_takes_data_as_an_option_too(tiny_dataset, tmp_path):
    result = invoke("train", "--data", str(tiny_dataset), *TINY_TRAINING, "--batch-negatives", "31", "--out", str(tmp_path / "run"), "-v")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dataset"]["path"] == str(tiny_dataset.resolve())
    assert "epoch 1: loss" in result.stderr  # -v after the subcommand shows the per-epoch detail
    both = invoke("train", str(tiny_dataset), "--data", str(tmp_path), *TINY_TRAINING)
    assert both.exit_code == 2 and "DATA" in both.stderr and "--data" in both.stderr


# --------------------------------------------------------------------------------------------- 3. defaults that fit


def test_in_batch_negatives_follow_the_batch_size(tiny_dataset, tmp_path):
    from tron_cli.training.config import TrainConfig

    assert TrainConfig.create().in_batch_negatives == 127  # TRON XL: 127 at batch 128
    assert TrainConfig.create(batch_size=64).in_batch_negatives == 63
    assert TrainConfig.create(batch_size=64, batch_negatives=10).in_batch_negatives == 10
    result = invoke("train", str(tiny_dataset), *TINY_TRAINING[:-2], "--batch-size", "16", "--out", str(tmp_path / "run"), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["batch_negatives"] is None  # batch size - 1


def test_settings_that_do_not_fit_the_catalogue_or_the_cpu_are_named_once(tiny_dataset, tmp_path):
    n_items = json.loads((tiny_dataset / "dataset.json").read_text())["n_items"]
    args = [str(tiny_dataset), *TINY_TRAINING, "--batch-negatives", "31", "--uniform-negatives", "2048", "--hidden-size", "96"]
    result = invoke("train", *args, "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning")]
    assert len(warnings) == 2, result.stderr
    assert f"2,048 uniform negatives are drawn from a catalogue of {n_items} items" in warnings[0] and "--uniform-negatives 128" in warnings[0]
    assert "CPU" in warnings[1] and "d 96" in warnings[1] and "--preset small" in warnings[1]
    quiet = invoke("train", str(tiny_dataset), *TINY_TRAINING, "--batch-negatives", "31", "--out", str(tmp_path / "fits"))
    assert "Warning" not in quiet.stderr


def test_the_cpu_warning_names_only_what_the_loss_uses(tiny_dataset, tmp_path):
    """A full softmax draws no negatives: at d 16 with TRON XL's 16,384 negatives configured it fits a CPU, and at
    d 96 the warning speaks of d alone."""
    ce = [str(tiny_dataset), *TINY_TRAINING, "--loss", "ce", "--uniform-negatives", "16384", "--topk", "100"]
    quiet = invoke("train", *ce, "--out", str(tmp_path / "small"))
    assert quiet.exit_code == 0, quiet.stderr
    assert "Warning" not in quiet.stderr
    large = invoke("train", *ce, "--hidden-size", "96", "--out", str(tmp_path / "large"))
    assert large.exit_code == 0, large.stderr
    warnings = [line for line in large.stderr.splitlines() if line.startswith("Warning")]
    assert len(warnings) == 1 and "d 96" in warnings[0] and "negatives" not in warnings[0], large.stderr


def test_presets_are_named_configurations_under_config_and_flags(tiny_dataset, tmp_path):
    from tron_cli.training.config import PRESETS

    help_text = invoke("train", "--help").stdout
    for name in PRESETS:
        assert name in help_text
    assert "CPU-sized" in help_text
    fast = ["--device", "cpu", "--epochs", "1", "--overfit-batches", "1", "--batch-size", "16", "--max-length", "10"]

    def config(*args: str) -> dict[str, Any]:
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        result = invoke("train", str(tiny_dataset), *fast, *args, "--out", str(out))
        assert result.exit_code == 0, result.stderr
        document = json.loads((out / "config.json").read_text())
        return {**document["train"], **document["model"]}

    small = config("--preset", "small")
    assert (small["hidden_size"], small["uniform_negatives"], small["bucket_window"]) == (64, 1024, 32)
    assert config("--preset", "small", "--hidden-size", "32")["hidden_size"] == 32  # a flag wins
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"hidden_size": 48}))
    for order in (("--config", str(file), "--preset", "small"), ("--preset", "small", "--config", str(file))):
        chosen = config(*order)
        assert chosen["hidden_size"] == 48 and chosen["uniform_negatives"] == 1024  # the file wins, in either order
    assert config("--preset", "reference", "--hidden-size", "16", "--uniform-negatives", "64", "--topk", "32")["mask_hits"] is False
    refused = invoke("train", str(tiny_dataset), *fast, "--preset", "small", "--model", "gru4rec")
    assert refused.exit_code == 2 and "--preset small" in refused.stderr


# --------------------------------------------------------------------------------------------- 4. know what you have


@pytest.fixture
def filled_home(tiny_dataset, tiny_model, tmp_path, monkeypatch) -> Path:
    """A $TRON_HOME (and working directory) holding the tiny dataset, its run (evaluated) and its bundle."""
    root = tmp_path / "home"
    shutil.copytree(tiny_dataset, root / "data" / "tiny")
    shutil.copytree(tiny_model[0], root / "runs" / "tiny-sasrec-1")
    shutil.copytree(tiny_model[1], root / "bundles" / "tiny-sasrec-1")
    monkeypatch.setenv("TRON_HOME", str(root))
    monkeypatch.chdir(root)
    for document in (root / "runs" / "tiny-sasrec-1" / "config.json", root / "bundles" / "tiny-sasrec-1" / "config.json"):
        data = json.loads(document.read_text())
        if isinstance(data.get("dataset"), dict):
            data["dataset"]["path"] = str(root / "data" / "tiny")
        document.write_text(json.dumps(data))
    return root


def test_evaluate_names_the_run_it_evaluated(filled_home):
    result = invoke("evaluate", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(f"{Path('runs') / 'tiny-sasrec-1'} on test")
    assert json.loads(result.stdout)["run"] == str(filled_home / "runs" / "tiny-sasrec-1")
    by_name = invoke("evaluate", "tiny-sasrec-1", "--device", "cpu")
    assert by_name.exit_code == 0 and "tiny-sasrec-1 on test" in by_name.stderr


def test_ls_lists_datasets_runs_and_bundles_with_their_figures(filled_home):
    result = invoke("ls", "--json")
    assert result.exit_code == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["home"] == str(filled_home) and listing["downloads"] == []
    (dataset,) = listing["datasets"]
    info = json.loads((filled_home / "data" / "tiny" / "dataset.json").read_text())
    assert dataset["name"] == "tiny" and dataset["items"] == info["n_items"] and dataset["sessions"]["train"] == info["counts"]["train"]["sessions"]
    (run,) = listing["runs"]
    summary = json.loads((filled_home / "runs" / "tiny-sasrec-1" / "summary.json").read_text())
    assert run["status"] == "complete" and run["epochs"] == 1 and run["valid_recall@20"] == summary["valid"]["recall@20"]
    (bundle,) = listing["bundles"]
    exported_from = json.loads((filled_home / "bundles" / "tiny-sasrec-1" / "config.json").read_text())["run"]["name"]
    assert bundle["run"] == exported_from and bundle["items"] == info["n_items"]
    for entry in (dataset, run, bundle):
        assert os.path.isabs(entry["path"]) and entry["size"] > 0 and entry["created"]
    table = invoke("ls")
    assert table.exit_code == 0 and "tiny-sasrec-1" in table.stdout and "datasets" in table.stdout  # the listing is the data: stdout
    only_runs = invoke("ls", "runs", "--json")
    assert set(json.loads(only_runs.stdout)) == {"home", "runs"}


def test_ls_of_an_empty_home_says_how_to_start(home):
    result = invoke("ls")
    assert result.exit_code == 0 and "tron download synthetic" in result.stderr


def test_info_describes_one_artifact_with_its_schema(filled_home):
    result = invoke("info", "data/tiny", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    files = {Path(entry["path"]).name: entry for entry in document["files"]}
    assert files["train.parquet"]["columns"] == {
        "session": "int64",
        "items": "list<element: int32>",
        "ts": "list<element: int64>",
        "extra_items": "list<element: int32>",
        "extra_ts": "list<element: int64>",
        "extra_types": "list<element: int8>",
    }
    assert files["items.parquet"]["rows"] == document["items"] and document["counts"]["test"]["sessions"] > 0
    run = json.loads(invoke("info", "tiny-sasrec-1", "--json").stdout)  # a name: the run before its bundle
    assert run["kind"] == "run" and run["config"]["train"]["epochs"] == 1 and run["summary"]["best_epoch"] == 1
    assert run["same_name"] == [str(filled_home / "bundles" / "tiny-sasrec-1")]
    weights = {Path(entry["path"]).name: entry for entry in run["files"]}["model.safetensors"]["tensors"]
    assert weights["item_embedding"]["shape"][0] == document["items"] + 1
    table = invoke("info", "bundles/tiny-sasrec-1")
    assert table.exit_code == 0 and "model.safetensors" in table.stdout and "config" in table.stdout
    single = json.loads(invoke("info", "data/tiny/test.parquet", "--json").stdout)
    assert single["kind"] == "file" and single["rows"] == document["counts"]["test"]["sessions"]
    missing = invoke("info", "nothing-here")
    assert missing.exit_code == 1 and "tron ls" in missing.stderr


# --------------------------------------------------------------------------------------------- 6. small things


def test_an_interrupt_that_saved_a_checkpoint_is_no_error(tiny_dataset, tmp_path, monkeypatch):
    from tron_cli.errors import Interrupted
    from tron_cli.stages import train

    def interrupted(request, report):
        raise Interrupted("interrupted in epoch 2 after 640 sessions; checkpoint saved", f"Resume: tron train --resume {tmp_path / 'run'}")

    monkeypatch.setattr(train, "train", interrupted)
    result = invoke("train", str(tiny_dataset), *TINY_TRAINING)
    assert result.exit_code == 130
    assert result.stderr == f"Interrupted in epoch 2 after 640 sessions; checkpoint saved. Resume: tron train --resume {tmp_path / 'run'}\n"


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for inner in value.values() for s in _strings(inner)]
    if isinstance(value, list):
        return [s for inner in value for s in _strings(inner)]
    return [value] if isinstance(value, str) else []


def test_every_json_path_is_absolute(tmp_path, monkeypatch):
    """With TRON_HOME unset (the current directory), every path a --json document holds is absolute."""
    monkeypatch.chdir(tmp_path)
    commands = [
        ["download", "synthetic", "--sessions", "400", "--items", "60"],
        ["preprocess"],
        ["train", *TINY_TRAINING, "--batch-negatives", "31"],
        ["evaluate", "--device", "cpu"],
        ["evaluate", "--baseline", "popular", "--device", "cpu"],
        ["export"],
        ["plot", "-o", "curves.png"],
        ["ls"],
        ["info", "synthetic-sasrec-1"],
        ["info", "data/synthetic/items.parquet"],
    ]
    for command in commands:
        result = invoke(*command, "--json")
        assert result.exit_code == 0, (command, result.stderr)
        paths = [s for s in _strings(json.loads(result.stdout)) if os.sep in s and not re.fullmatch(r"[a-z]+/\d+", s)]  # not schema tags
        assert paths, command
        assert all(os.path.isabs(path) for path in paths), (command, [p for p in paths if not os.path.isabs(p)])


def test_the_progress_bar_estimates_the_time_left_from_its_first_update():
    from rich.progress import Progress

    from tron_cli.api.progress import RichTask, _Remaining

    clock = [100.0]
    progress = Progress(_Remaining(), get_time=lambda: clock[0], auto_refresh=False, disable=True)
    task = RichTask(progress, "epoch 1/1", total=100)
    column = _Remaining()
    task.update(completed=20)  # a resumed epoch starts at 20: the rate counts from here
    assert column.render(progress.tasks[0]).plain == "ETA -:--:--"
    clock[0] += 30
    task.update(completed=40)  # 20 sessions in 30 s: 60 left take 90 s
    assert column.render(progress.tasks[0]).plain == "ETA 0:01:30"
    task.close()
