"""Shared fixtures: the reference material beside the checkout, and tiny datasets built through the real CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import invoke, shared, tiny_train_args


def pytest_configure(config):
    """Under pytest-xdist, share the cores between the workers: oversubscribed OpenMP threads run several times slower."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = str(max(1, (os.cpu_count() or 1) // int(workers)))
        os.environ.setdefault("OMP_NUM_THREADS", threads)  # inherited by the subprocesses that tests start
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def no_tron_environment(monkeypatch) -> None:
    """Every test starts without TRON_* variables: a developer's own TRON_HOME or TRON_TRAIN_* must not leak in."""
    for name in list(os.environ):
        if name.startswith("TRON_"):
            monkeypatch.delenv(name)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty $TRON_HOME, also the working directory."""
    monkeypatch.setenv("TRON_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A small synthetic dataset (train, valid, test) made by `tron download synthetic` + `tron preprocess`."""
    root = tmp_path_factory.mktemp("tiny")
    mp = pytest.MonkeyPatch()
    mp.setenv("TRON_HOME", str(root))
    try:
        result = invoke("download", "synthetic", "--sessions", "3000", "--items", "300", "--seed", "3")
        assert result.exit_code == 0, result.stderr
        result = invoke("preprocess", "--json")
        assert result.exit_code == 0, result.stderr
    finally:
        mp.undo()
    return Path(json.loads(result.stdout)["dataset"])


@pytest.fixture(scope="session")
def grown(tiny_dataset, tmp_path_factory) -> Path:
    """Another day's dataset whose catalogue extends `tiny_dataset`'s (`--catalogue-from`) by the raw aids from 300
    that it holds. Treat as read-only."""
    root = tmp_path_factory.mktemp("grown")
    mp = pytest.MonkeyPatch()
    mp.setenv("TRON_HOME", str(root))
    try:
        assert invoke("download", "synthetic", "--sessions", "1500", "--items", "400", "--seed", "4").exit_code == 0
        result = invoke("preprocess", "--catalogue-from", str(tiny_dataset), "--json")
        assert result.exit_code == 0, result.stderr
    finally:
        mp.undo()
    summary = json.loads(result.stdout)
    assert summary["catalogue_from"]["new"] > 50 and summary["n_items"] == summary["catalogue_from"]["n_items"] + summary["catalogue_from"]["new"]
    return Path(summary["dataset"])


@pytest.fixture(scope="session")
def tiny_sequences(tmp_path_factory) -> Path:
    """A small leave-one-out dataset (`--split last`, as the Amazon sets): 600 users, 120 items, 6-16 interactions
    each, every next item following the last by a fixed transition most of the time (a seeded generator)."""
    import numpy as np

    rng = np.random.default_rng(11)
    successor = rng.permutation(120) + 1  # (N,) the usual next item of each item
    rows = ["user,item,position"]
    for user in range(600):
        item = int(rng.integers(1, 121))
        for position in range(int(rng.integers(6, 17))):
            rows.append(f"{user},{item},{position}")
            item = int(successor[item - 1]) if rng.random() < 0.7 else int(rng.integers(1, 121))
    root = tmp_path_factory.mktemp("sequences")
    (root / "sequences.csv").write_text("\n".join(rows) + "\n")
    out = root / "sequences"
    columns = ["--session-col", "user", "--item-col", "item", "--time-col", "position"]
    result = invoke("preprocess", "--train", str(root / "sequences.csv"), "--split", "last", *columns, "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def yoochoose_64(tmp_path_factory) -> Path:
    """../shared/data/yoochoose-1-64 ingested as a pre-split OTTO-format dataset (no validation split), keeping
    test items unknown to this train slice in the catalogue, as the published results on this split do."""
    train, test = shared("data/yoochoose-1-64/train.jsonl"), shared("data/yoochoose-1-64/test.jsonl")
    out = tmp_path_factory.mktemp("yc64") / "yoochoose-1-64"
    result = invoke("preprocess", "--train", str(train), "--test", str(test), "--unknown-test-items", "keep", "--no-valid", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """(run, bundle): a small SASRec trained for two steps on `tiny_dataset`, and its export. Treat as read-only."""
    root = tmp_path_factory.mktemp("tiny-model")
    run, bundle = root / "runs" / "tiny", root / "bundles" / "tiny"
    result = invoke("train", str(tiny_dataset), *tiny_train_args(epochs=1, overfit_batches=2), "--out", str(run))
    assert result.exit_code == 0, result.stderr
    result = invoke("export", str(run), "--out", str(bundle))
    assert result.exit_code == 0, result.stderr
    return run, bundle


@pytest.fixture
def as_on_a_gpu(monkeypatch):
    """The training step's path on every device but the CPU, where reading a value back is not free
    (`runtime.reads_are_free`): the path the no-host-read tests check."""
    from tron_cli import runtime

    monkeypatch.setattr(runtime, "reads_are_free", lambda device: False)
