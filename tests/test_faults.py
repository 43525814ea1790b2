"""Faults during training: a NaN loss, non-finite weights, Ctrl-C / SIGTERM, and two `tron train` on one run dir.

Training stops with one line and exit 1 on a non-finite loss or weights and keeps the last good checkpoint;
an interrupt saves a mid-epoch checkpoint and exits 130, and resuming from it ends with the weights an
uninterrupted run gets (CPU, same seed); a run dir is written by one `tron train` at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import invoke, tiny_train_args
from tron_cli.training import loop as train_module

FAST = [*tiny_train_args(), "--valid-limit", "100"]
# 1,000 small steps (about 3 s on one idle core; 200 were once 2 s, and then finished within the half second before
# the interrupt once the CPU step got faster), so that an interrupt half a second in lands inside the epoch
LONG_STEPS = 1000
LONG = [
    *tiny_train_args(batch_size=4, batch_negatives=3, topk=16, max_length=10),
]
LONG += ["--shuffle", "shuffle_without_replacement", "--seed", "5", "--epochs", "1", "--overfit-batches", str(LONG_STEPS), "--valid-limit", "100"]


def _one_error_line(result, code: int = 1) -> str:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def _finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors.values())


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --------------------------------------------------------------------------------------------- NaN and inf


def test_absurd_learning_rate_stops_with_one_line_and_saves_nothing(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    result = invoke("train", str(tiny_dataset), *FAST, "--lr", "1e30", "--epochs", "2", "--overfit-batches", "3", "--out", str(out), "--json")
    line = _one_error_line(result)
    assert "the loss became nan in epoch 1" in line and "nothing was saved" in line and "Lower --lr" in line
    assert sorted(p.name for p in out.iterdir()) == [".lock", "config.json"]  # no weights, no checkpoint, not finished


def test_nan_loss_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    """Epoch 1 trains normally, epoch 2's loss is NaN (and so are the weights it updates): the run stops, and
    model.safetensors and checkpoint/ are still epoch 1's, finite, and resumable."""
    out = tmp_path / "run"
    real, calls = train_module.event_loss, {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 3 else loss  # 3 steps an epoch

    monkeypatch.setattr(train_module, "event_loss", poisoned)
    line = _one_error_line(invoke("train", str(tiny_dataset), *FAST, "--epochs", "3", "--overfit-batches", "3", "--out", str(out), "--json"))
    assert "the loss became nan in epoch 2" in line and "the checkpoint of epoch 1 is kept" in line
    assert not (out / "summary.json").exists()
    assert json.loads((out / "checkpoint" / "state.json").read_text())["epoch"] == 1
    kept = load_file(out / "checkpoint" / "weights.safetensors")
    assert _finite(kept)
    _assert_same(load_file(out / "model.safetensors"), kept)  # the selected weights are epoch 1's, not the NaN ones
    assert [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()] == [1]

    monkeypatch.undo()
    result = invoke("train", "--resume", str(out), "--epochs", "2")
    assert result.exit_code == 0, result.stderr
    assert _finite(load_file(out / "model.safetensors")) and (out / "summary.json").exists()


def test_non_finite_weights_behind_a_finite_loss_are_never_saved(tiny_dataset, tmp_path, monkeypatch):
    """The last step of epoch 2 leaves an infinite weight while its loss was finite: the end-of-epoch check
    refuses to checkpoint or select it."""
    out = tmp_path / "run"
    real, steps = train_module.Trainer.update, {"n": 0}

    def update(self, loss):
        real(self, loss)
        steps["n"] += 1
        if steps["n"] == 6:
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[-1] = float("inf")

    monkeypatch.setattr(train_module.Trainer, "update", update)
    line = _one_error_line(invoke("train", str(tiny_dataset), *FAST, "--epochs", "3", "--overfit-batches", "3", "--out", str(out)))
    assert "weights became NaN or infinite in epoch 2" in line and "the checkpoint of epoch 1 is kept" in line
    assert json.loads((out / "checkpoint" / "state.json").read_text())["epoch"] == 1
    assert _finite(load_file(out / "checkpoint" / "weights.safetensors")) and _finite(load_file(out / "model.safetensors"))


# --------------------------------------------------------------------------------------------- Ctrl-C, SIGTERM


def _env(home: Path) -> dict[str, str]:
    """One thread per child: the reference and the interrupted run train at once, and torch's OpenMP threads spin
    (two processes with a thread per core each slow down by orders of magnitude). The same in every child, so
    that their arithmetic is the same."""
    return {**os.environ, "TRON_HOME": str(home), "NO_COLOR": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _tron(home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tron_cli", *args], env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _interrupt(process: subprocess.Popen, run: Path, sig: int) -> tuple[int, str]:
    """Send `sig` once training is under way (its config.json is written right before the first step)."""
    _wait_for(run / "config.json", process)
    time.sleep(0.5)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_saves_a_mid_epoch_checkpoint_and_resume_equals_the_uninterrupted_run(tiny_dataset, tmp_path, sig):
    interrupted, whole = tmp_path / "interrupted", tmp_path / "whole"
    reference = _tron(tmp_path, "train", str(tiny_dataset), *LONG, "--out", str(whole)) if sig == signal.SIGINT else None
    code, stderr = _interrupt(_tron(tmp_path, "train", str(tiny_dataset), *LONG, "--out", str(interrupted)), interrupted, sig)
    assert code == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Interrupted in epoch 1 after "), stderr  # a Ctrl-C that did its job is no error
    assert f"tron train --resume {interrupted}" in lines[0]
    state = json.loads((interrupted / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 0 and 0 < state["done"] < LONG_STEPS * 4  # mid-epoch: the epoch's order is saved with it
    assert "order" in load_file(interrupted / "checkpoint" / "generators.safetensors")
    assert not (interrupted / "summary.json").exists() and not (interrupted / "model.safetensors").exists()
    if reference is None:
        return
    resumed = subprocess.run(
        [sys.executable, "-m", "tron_cli", "train", "--resume", str(interrupted)], env=_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(timeout=300) == 0, reference.communicate()
    _assert_same(load_file(interrupted / "checkpoint" / "weights.safetensors"), load_file(whole / "checkpoint" / "weights.safetensors"))
    _assert_same(load_file(interrupted / "model.safetensors"), load_file(whole / "model.safetensors"))


# --------------------------------------------------------------------------------------------- the run lock


def test_one_tron_train_per_run_dir_but_several_run_dirs_at_once(tiny_dataset, tmp_path):
    first, other = tmp_path / "first", tmp_path / "other"
    process = _tron(tmp_path, "train", str(tiny_dataset), *LONG, "--out", str(first))
    try:
        _wait_for(first / "config.json", process)
        config = (first / "config.json").read_bytes()
        # the same run dir, even with --force: refused at once, and the running one is left alone
        line = _one_error_line(invoke("train", str(tiny_dataset), *FAST, "--overfit-batches", "1", "--out", str(first), "--force"))
        assert f"{first} is being written by another tron train" in line
        line = _one_error_line(invoke("train", "--resume", str(first)))
        assert "another tron train" in line
        assert (first / "config.json").read_bytes() == config
        # another run dir trains while the first still runs (on one thread here too: see _env)
        assert process.poll() is None
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            result = invoke("train", str(tiny_dataset), *FAST, "--epochs", "1", "--overfit-batches", "2", "--out", str(other))
        finally:
            torch.set_num_threads(threads)
        assert result.exit_code == 0, result.stderr
    finally:
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert (first / "summary.json").exists() and (other / "summary.json").exists()


# --------------------------------------------------------------------------------------------- resume tells the truth


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("moment", ["validation", "epoch-end"])
def test_an_interrupt_at_an_epochs_end_resumes_with_the_same_history(tiny_dataset, tmp_path, monkeypatch, moment):
    """Ctrl-C while epoch 1 validates (or while its checkpoint is written), then --resume: history.jsonl has the
    loss, sessions, events and a positive throughput of every epoch, as the uninterrupted run has (never a loss of 0)."""
    args = [str(tiny_dataset), *FAST, "--epochs", "2", "--overfit-batches", "3", "--seed", "4"]
    whole, interrupted = tmp_path / "whole", tmp_path / "interrupted"
    assert invoke("train", *args, "--out", str(whole)).exit_code == 0
    name = "validate" if moment == "validation" else "save_checkpoint"
    real = getattr(train_module.Trainer, name)

    def interrupting(self, *a, **k):
        if self.state.epoch == (0 if moment == "validation" else 1) and not getattr(self, "_interrupted", False):
            self._interrupted = True
            os.kill(os.getpid(), signal.SIGINT)  # the handler only marks the request: the call goes on
        return real(self, *a, **k)

    monkeypatch.setattr(train_module.Trainer, name, interrupting)
    stopped = invoke("train", *args, "--out", str(interrupted))
    monkeypatch.undo()
    assert stopped.exit_code == 130, stopped.stderr
    assert f"tron train --resume {interrupted}" in stopped.stderr
    assert [record["epoch"] for record in _history(interrupted)] == [1]
    resumed = invoke("train", "--resume", str(interrupted))
    assert resumed.exit_code == 0, resumed.stderr
    expected, got = _history(whole), _history(interrupted)
    assert [r["epoch"] for r in got] == [1, 2]
    for a, b in zip(expected, got):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and b["loss"] > 0
        timed = ("seconds", "loss", "sessions_per_s", "events_per_s")  # measured: positive, never equal
        assert {k: a[k] for k in a if k not in timed} == {k: b[k] for k in b if k not in timed}
        assert a.keys() == b.keys() and all(b[k] > 0 for k in timed)
    _assert_same(load_file(interrupted / "model.safetensors"), load_file(whole / "model.safetensors"))


def test_resume_with_no_more_epochs_to_train_says_so_and_changes_nothing(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    assert invoke("train", str(tiny_dataset), *FAST, "--epochs", "2", "--overfit-batches", "2", "--out", str(run)).exit_code == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for epochs in ("2", "1"):
        result = invoke("train", "--resume", str(run), "--epochs", epochs)
        assert result.exit_code == 0, result.stderr
        assert "nothing to do" in result.stderr and "--epochs 3" in result.stderr, result.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_run_killed_before_its_first_epoch_restarts_by_following_its_message(tiny_dataset, tmp_path):
    """Killed before the first epoch ended: only config.json was written. `tron evaluate` says to resume it, and
    `tron train --resume` trains it from the start with its config."""
    done, killed = tmp_path / "done", tmp_path / "killed"
    assert invoke("train", str(tiny_dataset), *FAST, "--epochs", "1", "--overfit-batches", "2", "--out", str(done)).exit_code == 0
    killed.mkdir()
    shutil.copy(done / "config.json", killed / "config.json")
    line = _one_error_line(invoke("evaluate", str(killed), "--device", "cpu"))
    advice = line.split(". ", 1)[1]
    assert advice == f"Resume it: tron train --resume {killed}", line
    result = invoke(*advice.removeprefix("Resume it: tron ").split())
    assert result.exit_code == 0, result.stderr
    assert "training it again from the start" in result.stderr
    assert (killed / "summary.json").exists()
    _assert_same(load_file(killed / "model.safetensors"), load_file(done / "model.safetensors"))


@pytest.mark.parametrize("fault", ["full-disk", "read-only"])
def test_training_that_cannot_write_an_epoch_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path, monkeypatch, fault):
    """The disk fills up (or turns read-only) while epoch 2 is saved: one line, exit 1, and the run dir still holds
    epoch 1's checkpoint and weights, whole; once the disk has room, --resume finishes the run."""
    from tests.unwritable import full_disk, read_only

    out = tmp_path / "run"
    real = train_module.Trainer._save_epoch

    def save_epoch(self, record, improved):
        if self.state.epoch == 2:
            (full_disk if fault == "full-disk" else read_only)(monkeypatch, out)
        return real(self, record, improved)

    monkeypatch.setattr(train_module.Trainer, "_save_epoch", save_epoch)
    line = _one_error_line(invoke("train", str(tiny_dataset), *FAST, "--epochs", "3", "--overfit-batches", "2", "--out", str(out)))
    monkeypatch.undo()
    assert "training stopped after epoch 2" in line and "the checkpoint of epoch 1 is kept" in line and f"tron train --resume {out}" in line, line
    assert json.loads((out / "checkpoint" / "state.json").read_text())["epoch"] == 1
    assert _finite(load_file(out / "checkpoint" / "weights.safetensors")) and _finite(load_file(out / "model.safetensors"))
    assert [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()] == [1]
    resumed = invoke("train", "--resume", str(out))
    assert resumed.exit_code == 0, resumed.stderr
    assert [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_complete_one(tiny_dataset, tmp_path, monkeypatch):
    """Epoch 1 checkpoints; the disk fills while epoch 2's checkpoint is written: one line, exit 1, and the
    checkpoint on disk is still epoch 1's, whole, and resumable."""
    from tests.unwritable import full_disk
    from tron_cli.training import checkpoint

    out = tmp_path / "run"
    real, saves = checkpoint.save, {"n": 0}

    def save(directory, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            full_disk(monkeypatch, out)  # from now on every fsync under the run dir fails with ENOSPC
        return real(directory, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", save)
    line = _one_error_line(invoke("train", str(tiny_dataset), *FAST, "--epochs", "3", "--overfit-batches", "3", "--out", str(out)))
    assert "no space is left on the device" in line and "checkpoint" in line
    monkeypatch.undo()
    assert json.loads((out / "checkpoint" / "state.json").read_text())["epoch"] == 1
    assert invoke("train", "--resume", str(out), "--epochs", "2").exit_code == 0
