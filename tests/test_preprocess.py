"""`tron preprocess`: the artifact contract, golden parity with the reference, real samples, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import fixture, golden, invoke, shared
from tron_cli.artifacts.sessions import read_items, read_sessions


def _raw_sessions(dataset, split):
    ids = np.asarray(read_items(dataset / "items.parquet").column("id"))
    sessions = read_sessions(dataset / f"{split}.parquet")
    return [
        {"session": str(sessions.session[i]), "items": [str(ids[x - 1]) for x in sessions.items[sessions.offsets[i] : sessions.offsets[i + 1]]]}
        for i in range(len(sessions))
    ]


def test_synthetic_download_then_preprocess(home):
    assert invoke("download", "synthetic", "--sessions", "5000", "--items", "1000", "--seed", "1").exit_code == 0
    result = invoke("preprocess", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    dataset = home / "data" / "synthetic"
    assert summary["dataset"] == str(dataset) and summary["n_items"] > 900
    for split in ("train", "valid", "test"):
        assert summary[split]["sessions"] > 0 and summary[split]["events"] > summary[split]["sessions"]
        table = pq.read_table(dataset / f"{split}.parquet")
        assert table.schema.field("session").type == pa.int64()
        assert table.schema.field("items").type == pa.list_(pa.int32())
        assert table.schema.field("ts").type == pa.list_(pa.int64())
        items = np.concatenate(table.column("items").to_numpy(zero_copy_only=False))
        assert items.min() >= 1 and items.max() <= summary["n_items"]
        starts = [ts[0] for ts in table.column("ts").to_pylist()]
        assert starts == sorted(starts)  # sessions ordered by start
    catalogue = pq.read_table(dataset / "items.parquet")
    assert catalogue.column_names == ["item", "id", "count"]
    assert catalogue.column("item").to_pylist() == list(range(1, summary["n_items"] + 1))
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["schema"] == "dataset/2" and info["targets"] == "all" and info["splits"] == ["train", "valid", "test"]
    assert all(len(f["sha256"]) == 64 for f in info["source"]["files"])
    assert "sessions" in result.stderr  # the human summary goes to stderr


@pytest.mark.parametrize("name, raw", [("yoochoose", "sample_yoochoose.dat"), ("diginetica", "sample_train-item-views.csv")])
def test_golden_parity_without_validation(home, name, raw):
    expected = golden("preprocessing.json")[name]
    result = invoke("preprocess", name, "--input", str(fixture(f"data/raw/{raw}")), "--no-valid", "--json")
    assert result.exit_code == 0, result.stderr
    dataset = home / "data" / name
    assert _raw_sessions(dataset, "train") == expected["train"]
    assert _raw_sessions(dataset, "test") == expected["test"]
    assert json.loads(result.stdout)["n_items"] == expected["num_items"]


@pytest.mark.parametrize("name, raw", [("yoochoose", "sample_yoochoose.dat"), ("diginetica", "sample_train-item-views.csv")])
def test_validation_is_carved_out_of_the_reference_train_set(home, name, raw):
    expected = golden("preprocessing.json")[name]
    result = invoke("preprocess", name, "--input", str(fixture(f"data/raw/{raw}")), "--json")
    assert result.exit_code == 0, result.stderr
    dataset = home / "data" / name
    train, valid = _raw_sessions(dataset, "train"), _raw_sessions(dataset, "valid")
    assert len(valid) > 0
    assert sorted(map(json.dumps, train + valid)) == sorted(map(json.dumps, expected["train"]))
    assert _raw_sessions(dataset, "test") == expected["test"]
    assert json.loads(result.stdout)["n_items"] == expected["num_items"]
    valid_starts = [ts[0] for ts in pq.read_table(dataset / "valid.parquet").column("ts").to_pylist()]
    train_starts = [ts[0] for ts in pq.read_table(dataset / "train.parquet").column("ts").to_pylist()]
    assert min(valid_starts) >= max(train_starts) - 86_400_000 * 7  # valid is the end of train, by time


def test_otto_sample_keeps_clicks_only(home):
    path = fixture("data/otto-sample.jsonl")
    result = invoke("preprocess", "--train", str(path), "--split", "last", "--json")
    assert result.exit_code == 0, result.stderr
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    clicks = {r["session"]: [e["aid"] for e in r["events"] if e["type"] == "clicks"] for r in raw}
    kept = {s: c for s, c in clicks.items() if len(c) >= 2}
    summary = json.loads(result.stdout)
    dataset = home / "data" / "otto-sample"
    test = {int(s["session"]): [int(i) for i in s["items"]] for s in _raw_sessions(dataset, "test")}
    for session, items in test.items():
        assert items == kept[session]  # leave-one-out: test is the whole click sequence
    assert summary["targets"] == "last" and summary["test"]["targets"] == summary["test"]["sessions"]
    assert sum(summary[s]["events"] for s in ("train",)) <= sum(len(c) for c in kept.values())


def test_yoochoose_1_64_ingests_with_the_published_counts(yoochoose_64):
    info = json.loads((yoochoose_64 / "dataset.json").read_text())
    assert info["counts"]["train"]["sessions"] == 116_167 and info["counts"]["train"]["events"] == 486_026
    assert info["counts"]["test"]["sessions"] == 15_324 and info["counts"]["test"]["targets"] == 55_898
    assert info["n_items"] == 17_376 + 369  # train items, then the test-only items kept as misses


def test_yoochoose_1_64_dropping_unknown_test_items(home):
    train, test = shared("data/yoochoose-1-64/train.jsonl"), shared("data/yoochoose-1-64/test.jsonl")
    summary = json.loads(invoke("preprocess", "--train", str(train), "--test", str(test), "--no-valid", "--unknown-test-items", "drop", "--json").stdout)
    assert summary["n_items"] == 17_376 and summary["train"]["sessions"] == 116_167
    assert summary["test"]["targets"] < 55_898
    assert summary["unknown_test_targets"] == {"count": 412, "fraction": 412 / 55_898, "of_targets": 55_898, "policy": "drop"}


def test_own_logs_keep_unknown_test_targets_as_misses_by_default_and_say_how_many(home):
    train, test = shared("data/yoochoose-1-64/train.jsonl"), shared("data/yoochoose-1-64/test.jsonl")
    result = invoke("preprocess", "--train", str(train), "--test", str(test), "--json")
    summary = json.loads(result.stdout)
    assert summary["test"]["targets"] == 55_898 and summary["unknown_test_targets"]["policy"] == "keep"
    assert "412 of 55,898 test targets (0.7%) are items unknown to train: kept as misses" in result.stderr
    info = json.loads((Path(summary["dataset"]) / "dataset.json").read_text())
    assert info["unknown_test_targets"]["count"] == 412 and info["parameters"]["unknown_test_items"] == "keep"


def test_own_csv_log_with_time_split(home):
    rows = ["sid,product,when"]
    for session in range(40):
        for step in range(3):
            rows.append(f"s{session},p{(session + step) % 7},2024-01-{1 + session % 10:02d}T10:00:{step:02d}Z")
    (home / "log.csv").write_text("\n".join(rows) + "\n")
    result = invoke(
        "preprocess",
        "--train",
        "log.csv",
        "--format",
        "csv",
        "--session-col",
        "sid",
        "--item-col",
        "product",
        "--time-col",
        "when",
        "--test-days",
        "2",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["n_items"] == 7 and summary["test"]["sessions"] > 0
    ids = read_items(home / "data" / "log" / "items.parquet").column("id").to_pylist()
    assert ids == sorted(ids) and ids[0] == "p0"  # string ids keep their type


@pytest.mark.parametrize(
    "content, fmt, expected",
    [
        ('{"session": 1, "events": [{"aid": 1, "ts": 5, "type": "clicks"}]}\n{"session": 2, "events": [}\n', "otto-jsonl", "log.data:2"),
        ('{"session": 1, "events": [{"aid": "x", "ts": 5, "type": "clicks"}]}\n', "otto-jsonl", "log.data:1"),
        ('{"session": 1, "events": [{"aid": 1, "ts": 5, "type": "views"}]}\n', "otto-jsonl", "views"),
        ("", "otto-jsonl", "empty"),
        ("session,item\n1,2\n", "csv", "--time-col"),
        ("session,item,ts\n1,2,yesterday\n", "csv", "log.data:2"),
        ("session,item,ts\n1,2,-5\n", "csv", "negative"),
    ],
    ids=["broken-json", "string-aid", "unknown-type", "empty", "missing-column", "bad-time", "negative-time"],
)
def test_bad_input_fails_with_a_line_and_writes_nothing(home, content, fmt, expected):
    (home / "log.data").write_text(content)
    result = invoke("preprocess", "--train", "log.data", "--format", fmt)
    assert result.exit_code == 1, result.stdout
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (home / "data" / "log").exists()


def test_nothing_downloaded_says_what_to_run(home):
    result = invoke("preprocess")
    assert result.exit_code == 1 and "tron download" in result.stderr


def test_existing_dataset_needs_force(home):
    path = str(fixture("data/raw/sample_yoochoose.dat"))
    assert invoke("preprocess", "yoochoose", "--input", path).exit_code == 0
    again = invoke("preprocess", "yoochoose", "--input", path)
    assert again.exit_code == 2 and "--force" in again.stderr
    assert invoke("preprocess", "yoochoose", "--input", path, "--force").exit_code == 0


def test_any_json_layout_gives_the_same_dataset_as_otto_compact_lines(home):
    """OTTO's compact lines take a fast path; spaced-out or reordered JSON must give the identical result."""
    compact = fixture("data/otto-sample.jsonl").read_text().splitlines()
    relaxed = []
    for line in compact:
        record = json.loads(line)
        relaxed.append(
            json.dumps({"events": [{"type": e["type"], "ts": e["ts"], "aid": e["aid"]} for e in record["events"]], "session": record["session"]}, indent=None)
        )
    (home / "compact.jsonl").write_text("\n".join(compact) + "\n")
    (home / "relaxed.jsonl").write_text("\n".join(relaxed) + "\n\n")
    for name in ("compact", "relaxed"):
        result = invoke("preprocess", "--train", f"{name}.jsonl", "--split", "last", "--event-types", "clicks,carts")
        assert result.exit_code == 0, result.stderr
    for split in ("train", "valid", "test"):
        a = read_sessions(home / "data" / "compact" / f"{split}.parquet")
        b = read_sessions(home / "data" / "relaxed" / f"{split}.parquet")
        assert np.array_equal(a.items, b.items) and np.array_equal(a.ts, b.ts) and np.array_equal(a.offsets, b.offsets)


def test_leave_one_out_without_validation_trains_on_the_item_before_the_test_one(home):
    """`--split last --no-valid`: the refit dataset, train + validation, with the same test."""
    path = fixture("data/otto-sample.jsonl")
    with_valid = invoke("preprocess", "--train", str(path), "--split", "last", "--name", "held", "--json")
    refit = invoke("preprocess", "--train", str(path), "--split", "last", "--no-valid", "--name", "refit", "--json")
    assert with_valid.exit_code == 0 and refit.exit_code == 0, with_valid.stderr + refit.stderr
    held, whole = home / "data" / "held", home / "data" / "refit"
    assert not (whole / "valid.parquet").exists() and "valid" not in json.loads((whole / "dataset.json").read_text())["splits"]
    assert _raw_sessions(whole, "test") == _raw_sessions(held, "test")
    valid = {s["session"]: s["items"] for s in _raw_sessions(held, "valid")}
    train = {s["session"]: s["items"] for s in _raw_sessions(held, "train")}
    assert valid  # the sessions of three or more clicks train on their validation item as well
    for session in _raw_sessions(whole, "train"):
        assert session["items"] == valid.get(session["session"], train[session["session"]])
