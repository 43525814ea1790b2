"""The CUDA paths, checked without a GPU: device placement, no host sync inside a step, bf16 autocast and
`--compile` on the CPU.

Placement runs a whole training step (model, event slots, loss with the negatives given, backward and the
optimiser step) on the `meta` device: a tensor that the code leaves on, or creates on, the CPU meets a meta
tensor and raises, exactly as it would meet a CUDA tensor; and a value read back to the host (`.item()`, a
`nonzero`) raises too, since meta tensors have no values. torch's FakeTensorMode would fake `cuda` tensors
instead, but on a CPU-only build it cannot index, slice or differentiate them. Generators cannot leave the
CPU here, so negatives are drawn on the CPU and handed over.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from tests.helpers import invoke, tiny_train_args
from tron_cli.artifacts.sessions import read_dataset
from tron_cli.evaluation.procedures import EvalOptions, accumulate
from tron_cli.training import negatives as objective
from tron_cli.training.config import TrainConfig
from tron_cli.training.distributed import SINGLE
from tron_cli.training.feeds import batch_shapes, window_step
from tron_cli.training.loop import Trainer
from tron_cli.training.negatives import EventSlots
from tron_cli.training.optim import build_optimizers
from tron_cli.training.sampling import ItemDistribution, Negatives

META = torch.device("meta")
SMALL = dict(device="cpu", hidden_size=16, uniform_negatives=64, batch_size=16, batch_negatives=15, topk=16, max_length=10, dropout=0.0)
VARIANTS = {
    "tron": {},
    "sparse-adam": dict(optimizer="sparse-adam"),
    "sparse-adagrad": dict(optimizer="sparse-adagrad"),
    "adagrad": dict(optimizer="adagrad"),
    "bce-eventwise": dict(loss="bce", sampling_style="eventwise", uniform_negatives=1, batch_negatives=0, topk=0),
    "bpr-max-sessionwise-rejecting": dict(loss="bpr-max", sampling_style="sessionwise", topk=0, reject_uniform_session_items=True),
    "gbce-eventwise-rejecting": dict(loss="gbce", sampling_style="eventwise", uniform_negatives=8, topk=4, reject_uniform_session_items=True),
    "logq-popularity-rejecting": dict(logq=1.0, negative_distribution="popularity", reject_uniform_session_items=True),
    "bias-untied-left": dict(output_bias=True, share_embeddings=False, positions="left"),
    "ce": dict(loss="ce", topk=0, uniform_negatives=0, batch_negatives=0),
}


def _trainer(dataset: Path, tmp_path: Path, **options) -> Trainer:
    return Trainer(TrainConfig.create(**{**SMALL, **options}), read_dataset(dataset), tmp_path)


def _batch(trainer: Trainer, step: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(inputs, targets, mask, event slots) of a step, on the CPU, as `window_epoch` builds them."""
    order = torch.arange(len(trainer.store))
    ((width, slots),) = batch_shapes(trainer.store, order, trainer.config.max_length + 1, trainer.global_batch, SINGLE, range(step, step + 1))
    sequence = trainer.store.tail_windows(order[step * trainer.local_batch : (step + 1) * trainer.local_batch], width)
    inputs, targets = sequence[:, :-1], sequence[:, 1:]
    return inputs, targets, inputs != 0, slots


def _to_meta(trainer: Trainer, negatives: Negatives) -> Negatives:
    """Move the trainer's model, optimisers and tables to the meta device; the negatives are handed over."""
    trainer.model.to(META)
    trainer.forward, trainer.device = trainer.model, META
    trainer.optimizers = build_optimizers(trainer.model, trainer.config, scaled=True)  # fused kernels want a real device
    for holder in (trainer.distribution, trainer):
        for name, value in vars(holder).items():
            if isinstance(value, torch.Tensor):
                setattr(holder, name, value.to(META))
    moved = Negatives(
        negatives.style,
        *[None if t is None else t.to(META) for t in (negatives.uniform, negatives.uniform_valid, negatives.in_batch, negatives.in_batch_valid)],
    )
    trainer.negatives = lambda inputs, events: moved  # type: ignore[method-assign]
    return moved


def _meta_step(trainer: Trainer) -> torch.Tensor:
    inputs, targets, mask, slots = _batch(trainer)
    _to_meta(trainer, trainer.negatives(inputs, EventSlots.select(mask, targets, slots)))
    mask = mask.to(META)
    return window_step(trainer, inputs.to(META), targets.to(META), mask, slots, mask.sum())


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_training_step_keeps_every_tensor_on_the_training_device(tiny_dataset, tmp_path, variant):
    trainer = _trainer(tiny_dataset, tmp_path, **VARIANTS[variant])
    loss = _meta_step(trainer)
    assert loss.device == META
    assert all(p.device == META for p in trainer.model.parameters())
    assert all(
        state.device == META
        for optimizer in trainer.optimizers
        for s in optimizer.state.values()
        for state in s.values()
        if isinstance(state, torch.Tensor) and state.dim()
    )


def test_the_placement_check_catches_a_tensor_left_on_the_cpu(tiny_dataset, tmp_path, monkeypatch):
    trainer = _trainer(tiny_dataset, tmp_path)
    real = objective.Assembly.pool_index
    monkeypatch.setattr(objective.Assembly, "pool_index", lambda self, columns: real(self, columns) + torch.zeros((), dtype=torch.long).expand(1))
    with pytest.raises(RuntimeError, match="device"):
        _meta_step(trainer)


class HostReads(TorchFunctionMode):
    """Records every call that reads a value back from the device (or, on CUDA, waits for it): conversions to
    Python, outputs whose size depends on values, and boolean-mask indexing."""

    NAMES = frozenset(
        {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "nonzero", "argwhere", "unique", "unique_consecutive"}
        | {"masked_select", "bincount", "repeat_interleave", "_local_scalar_dense"}
    )

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        index = args[1] if name in ("__getitem__", "__setitem__", "index_put_", "index_put") and len(args) > 1 else None
        if name in self.NAMES or any(isinstance(part, torch.Tensor) and part.dtype == torch.bool for part in (index if isinstance(index, tuple) else (index,))):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_training_step_never_reads_from_the_device(tiny_dataset, tmp_path, variant, as_on_a_gpu):
    trainer = _trainer(tiny_dataset, tmp_path, **VARIANTS[variant])
    for step in range(2):  # the second step runs on optimiser state
        inputs, targets, mask, slots = _batch(trainer, step)
        with HostReads() as reads:
            loss = window_step(trainer, inputs, targets, mask, slots, mask.sum())
        assert reads.calls == [], reads.calls
    assert math.isfinite(float(loss))


def test_a_lane_step_never_reads_from_the_device(tiny_dataset, tmp_path, as_on_a_gpu):
    from tron_cli.batching import Lanes

    trainer = _trainer(tiny_dataset, tmp_path, model="gru4rec", hidden_size=16, uniform_negatives=32, batch_size=8)
    lanes = Lanes(trainer.store, torch.arange(len(trainer.store)), trainer.local_batch, trainer.config.max_length + 1)
    state = trainer.model.initial_state(trainer.local_batch, trainer.device)
    with HostReads() as reads:
        for _ in range(2):
            inputs, targets, active, reset = lanes.step()
            slots = EventSlots.select(active.unsqueeze(1), targets.unsqueeze(1), trainer.local_batch)
            output, state = trainer.model.step(inputs, state.detach(), reset, trainer.sparse)
            trainer.update(trainer.loss(slots.gather(output.unsqueeze(1)), inputs.unsqueeze(1), slots))
    assert reads.calls == [], reads.calls


def test_validation_reads_from_the_device_once_whatever_its_batches(tiny_dataset, tmp_path):
    trainer = _trainer(tiny_dataset, tmp_path)
    trainer.model.eval()
    for batch in (64, 4096):
        with HostReads() as reads:
            accumulate(trainer.scorer, trainer.valid, False, EvalOptions(cutoffs=(20,), query_batch=batch))
        assert reads.calls == ["tolist"]  # the width of every batch, at once


@pytest.mark.parametrize("last_only", [False, True])
def test_targets_are_enumerated_without_reading_their_number_from_the_device(last_only):
    from tron_cli.artifacts.sessions import Sessions
    from tron_cli.batching import SessionStore
    from tron_cli.evaluation.procedures import _targets

    lengths = torch.tensor([1, 4, 2, 1, 7, 3])
    width = int(lengths.max())
    expected = ((torch.arange(1, width)[None, :] < lengths[:, None]) & ((torch.arange(width - 1)[None, :] == lengths[:, None] - 2) | (not last_only))).nonzero()
    rows, cols = _targets(lengths, last_only, len(expected))
    assert torch.equal(torch.stack([rows, cols], 1), expected)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]).numpy()
    store = SessionStore(
        Sessions(
            torch.arange(6).numpy(), offsets, torch.arange(1, int(offsets[-1]) + 1).int().numpy(), torch.zeros(int(offsets[-1]), dtype=torch.long).numpy()
        ),
        torch.device("cpu"),
    )
    first = torch.zeros(store.n_events, dtype=torch.bool)
    first[store.offsets[:-1]] = True
    assert torch.equal(store.target_positions(False), (~first).nonzero().squeeze(1))


def test_sampling_outside_forbidden_items_follows_the_restricted_distribution():
    """Rejecting items and drawing again converges to the proposal restricted to the other items: the one-round
    draw must have exactly that distribution (chi-square), and never a forbidden item."""
    counts = torch.tensor([0.0, 5, 1, 3, 8, 2, 0, 4, 6], dtype=torch.float64)
    forbidden = torch.tensor([[4, 0, 2, 2, 7], [1, 3, 5, 0, 0]])  # repeats and padding (0) allowed
    for distribution in (ItemDistribution(8, None, 1.0, torch.device("cpu")), ItemDistribution(8, counts, 1.0, torch.device("cpu"))):
        ids, valid = distribution.sample_outside(forbidden, 100_000, torch.Generator().manual_seed(0))
        assert bool(valid.all())
        for row in range(2):
            weights = torch.ones(9, dtype=torch.float64) if distribution.uniform else counts.clone()
            weights[0] = 0
            weights[forbidden[row]] = 0
            expected = weights / weights.sum() * ids.shape[1]
            observed = torch.bincount(ids[row], minlength=9).double()
            assert float(observed[expected == 0].sum()) == 0
            chi2 = float(((observed - expected)[expected > 0] ** 2 / expected[expected > 0]).sum())
            assert chi2 < 27.9, chi2  # 8 degrees of freedom at most, p = 0.0005
    everything = torch.arange(1, 9)[None]
    _, valid = ItemDistribution(8, None, 1.0, torch.device("cpu")).sample_outside(everything, 5, torch.Generator())
    assert not bool(valid.any())


def test_bf16_autocast_on_cpu_gives_a_finite_loss_close_to_fp32(tiny_dataset, tmp_path):
    trainer = _trainer(tiny_dataset, tmp_path, precision="bf16")
    assert trainer.amp == torch.bfloat16
    inputs, targets, mask, slots = _batch(trainer)
    events = EventSlots.select(mask, targets, slots)
    negatives = trainer.negatives(inputs, events)
    trainer.negatives = lambda inputs, events: negatives  # type: ignore[method-assign]
    exact = trainer.loss(trainer.hidden(inputs, events), inputs, events)
    with trainer.autocast():
        reduced = trainer.loss(trainer.hidden(inputs, events), inputs, events)
    assert math.isfinite(float(reduced.detach())) and float(reduced.detach()) == pytest.approx(float(exact.detach()), rel=0.02)
    with trainer.autocast():
        trainer.update(trainer.loss(trainer.hidden(inputs, events), inputs, events))
    assert all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())


def test_bf16_training_on_cpu_end_to_end(tiny_dataset, tmp_path):
    args = [
        *tiny_train_args(batch_size=16, batch_negatives=15, topk=16, max_length=10),
    ]
    result = invoke(
        "train", str(tiny_dataset), *args, "--precision", "bf16", "--epochs", "1", "--overfit-batches", "3", "--out", str(tmp_path / "run"), "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert math.isfinite(json.loads(result.stdout)["loss"])


@pytest.mark.slow
def test_compiled_training_on_cpu_end_to_end_equals_eager(tiny_dataset, tmp_path):
    # no in-batch negatives: with --compile the event slots are rounded up, and the in-batch draw has a key per slot
    args = [*tiny_train_args(batch_size=16, batch_negatives=0, topk=16, max_length=None)]
    args += ["--max-length", "10", "--dropout", "0", "--epochs", "1", "--overfit-batches", "1", "--json"]
    losses = []
    for flags in (["--compile"], []):
        result = invoke("train", str(tiny_dataset), *args, *flags, "--out", str(tmp_path / f"run{len(flags)}"))
        assert result.exit_code == 0, result.stderr
        losses.append(json.loads(result.stdout)["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_the_gpu_script_runs_dry_on_the_cpu(tmp_path):
    """benchmarks/gpu.sh --dry-run: every benchmark of the GPU run at tiny sizes on the CPU, so that the script
    cannot rot between the rare runs on a GPU."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(["bash", "benchmarks/gpu.sh", "--dry-run"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {row["what"]: row for row in json.loads((out / "gpu.json").read_text())["rows"]}
    measured = [row for row in rows.values() if "skipped" not in row]
    assert {"TRON XL, dense Adam, bf16", "TRON XL, row-sparse Adam, fp32", "OTTO test set (10.7M targets) ranked"} <= rows.keys()
    assert len(measured) >= 8 and all(row["value"] > 0 for row in measured)
    assert "TRON XL, dense Adam, bf16" in result.stdout and "torch.profiler" in (out / "gpu.md").read_text()


def test_cpu_training_runs_with_deterministic_kernels_and_restores_the_setting():
    from tron_cli.runtime import deterministic_on_cpu

    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_on_cpu(torch.device("cpu")):
        # multi-threaded scatter additions of gradients would otherwise sum in a varying order
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.utils.deterministic.fill_uninitialized_memory  # no NaN fill of every new tensor
    assert not torch.are_deterministic_algorithms_enabled() and torch.utils.deterministic.fill_uninitialized_memory
    with deterministic_on_cpu(torch.device("cuda")):
        assert not torch.are_deterministic_algorithms_enabled()


def _mapped_while_held(size: int) -> int:
    """Fresh mappings (mallinfo2's hblks) that a malloc of `size` bytes made while it was held."""
    import ctypes
    import ctypes.util

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
        ]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    mapped = libc.mallinfo2().hblks - before
    libc.free(block)
    return mapped


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator is what heap_kept configures")
def test_cpu_training_keeps_freed_memory_in_the_heap_and_gives_it_back_after():
    """A block above glibc's mmap threshold is a fresh mapping outside `heap_kept` (page-faulted in on every step)
    and heap memory inside it; the defaults come back on leaving."""
    from tron_cli.runtime import cpu_training

    big = 64 * 2**20
    assert _mapped_while_held(big) == 1
    with cpu_training(torch.device("cpu")):
        assert _mapped_while_held(big) == 0
        assert torch.are_deterministic_algorithms_enabled()
    assert _mapped_while_held(big) == 1


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator is what heap_kept configures")
def test_heap_kept_blocks_nest():
    """Validation inside training: leaving the inner block keeps the outer one's setting."""
    from tron_cli.memory import heap_kept

    with heap_kept():
        with heap_kept():
            pass
        assert _mapped_while_held(64 * 2**20) == 0
    assert _mapped_while_held(64 * 2**20) == 1
