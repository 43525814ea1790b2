"""`tron plot`: training curves of fake runs, through the CLI and through the figure it builds."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest

from tests.helpers import invoke
from tron_cli.charts import build_figure, legend_labels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_run(root: Path, name: str, model: str, loss: str, epochs: list[dict], mtime: int) -> Path:
    """A run directory as `tron train` leaves it: config.json, history.jsonl, summary.json (dated `mtime`)."""
    run = root / "runs" / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"schema": "run/1", "name": name, "train": {"loss": loss, "model": model}}))
    (run / "history.jsonl").write_text("".join(json.dumps(record) + "\n" for record in epochs))
    (run / "summary.json").write_text(json.dumps({"schema": "summary/1", "epochs": len(epochs)}))
    os.utime(run / "summary.json", (mtime, mtime))
    return run


def _epoch(epoch: int, loss: float, recall: float | None) -> dict:
    valid = None if recall is None else {"recall@20": recall, "mrr@20": recall / 3}
    return {"epoch": epoch, "step": 120 * epoch, "loss": loss, "valid": valid, "sessions_per_s": 1234.5, "events_per_s": 9876.0, "seconds": 12.3}


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Two finished runs under $TRON_HOME/runs/; sasrec-1 is the newer and validates only every other epoch."""
    monkeypatch.setenv("TRON_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    tron = _write_run(tmp_path, "tron-1", "sasrec", "tron", [_epoch(e, 6.0 - e, 0.1 * e) for e in range(1, 5)], mtime=1_700_000_000)
    sasrec = _write_run(
        tmp_path, "sasrec-1", "sasrec", "ce", [_epoch(e, 5.5 - e / 2, 0.08 * e if e % 2 == 0 else None) for e in range(1, 6)], mtime=1_700_000_100
    )
    return [tron, sasrec]


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_newest_run_by_default_into_its_directory(runs):
    result = invoke("plot", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    expected = runs[1] / "training.png"  # sasrec-1 finished last
    assert document == {"output": str(expected.resolve()), "runs": [str(runs[1].resolve())]}
    width, height = _png_size(expected)
    assert 800 <= width <= 4000 and 300 <= height <= 2000
    assert not list(runs[1].glob(".*.tmp")), "the temporary file of the atomic write is left behind"


def test_two_runs_overlay_in_one_png(runs):
    result = invoke("plot", "tron-1", str(runs[1]), "-o", "compare.png", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["runs"] == [str(run.resolve()) for run in runs]
    _png_size(Path("compare.png"))

    figure = build_figure(runs)
    assert legend_labels(figure) == ["tron-1 (loss tron, model sasrec)", "sasrec-1 (loss ce, model sasrec)"]
    loss, recall, mrr = figure.axes
    assert [len(line.get_xdata()) for line in loss.get_lines()] == [4, 5]
    # sasrec-1 validated epochs 2 and 4 only: the others are left out, not drawn as zeros
    assert [list(line.get_xdata()) for line in recall.get_lines()] == [[1, 2, 3, 4], [2, 4]]
    assert [line.get_color() for line in mrr.get_lines()] == [line.get_color() for line in loss.get_lines()]
    for axes in figure.axes:
        assert all(float(tick).is_integer() for tick in axes.get_xticks())


def test_run_without_validation_says_so(runs):
    history = runs[0] / "history.jsonl"
    history.write_text("".join(json.dumps(_epoch(e, 3.0, None)) + "\n" for e in (1, 2)))
    figure = build_figure([runs[0]])
    for axes in figure.axes[1:]:
        assert [text.get_text() for text in axes.texts] == ["No validation in this run"]
    figure = build_figure(runs)
    assert [text.get_text() for text in figure.axes[1].texts] == ["no validation: tron-1"]


def test_several_runs_need_an_output(runs):
    result = invoke("plot", *map(str, runs))
    assert result.exit_code == 2
    assert "-o/--output" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_output_must_be_png(runs):
    result = invoke("plot", "-o", "curves.svg")
    assert result.exit_code == 2
    assert ".png" in result.stderr


def test_no_run_yet(tmp_path, monkeypatch):
    monkeypatch.setenv("TRON_HOME", str(tmp_path))
    result = invoke("plot")
    assert result.exit_code == 1
    assert "tron train" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("history", [None, "", '{"epoch": 1, "lo'], ids=["missing", "empty", "torn-only-line"])
def test_run_without_history(runs, history):
    path = runs[0] / "history.jsonl"
    if history is None:
        path.unlink()
    else:
        path.write_text(history)
    result = invoke("plot", str(runs[0]))
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert str(path) in line and "Run first: tron train" in line
    assert not (runs[0] / "training.png").exists()


def test_missing_matplotlib(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    result = invoke("plot")
    assert result.exit_code == 1
    assert "pip install 'tron-cli[plot]'" in result.stderr
