"""The CUDA paths on a GPU: training equals the CPU's in fp32, bf16 is finite, the row-sparse optimisers, `--compile`,
no synchronisation inside a step, evaluation and recommendation rank as on the CPU, and ONNX parity of a model
trained on CUDA. Deselected by default (pytest's addopts); `benchmarks/gpu.sh` runs them with `-m cuda`.

The data are made without polars (benchmarks/_data.py), so that a bare GPU image runs these as they are.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import invoke
from tron_cli.artifacts.sessions import read_dataset
from tron_cli.batching import SessionStore
from tron_cli.evaluation.procedures import EvalOptions, accumulate
from tron_cli.inference.scorer import Scorer
from tron_cli.inference.scoring import score_sessions
from tron_cli.models.sasrec import SASRec, SASRecConfig
from tron_cli.training.config import TrainConfig
from tron_cli.training.distributed import SINGLE
from tron_cli.training.feeds import batch_shapes, window_step
from tron_cli.training.loop import Trainer
from tron_cli.training.negatives import EventSlots
from tron_cli.training.sampling import Negatives

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _data import sessions as make_sessions
from _data import write_dataset

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: run benchmarks/gpu.sh on a GPU machine")]

CUDA = torch.device("cuda")
SMALL = dict(hidden_size=32, uniform_negatives=256, batch_size=32, batch_negatives=31, topk=32, max_length=20, dropout=0.0, precision="fp32")
ARGS = ["--hidden-size", "32", "--uniform-negatives", "256", "--batch-size", "32", "--batch-negatives", "31", "--topk", "32", "--max-length", "20"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("cuda") / "otto-shaped", 3000, 2000, n_test=300)


@pytest.fixture(autouse=True)
def exact_matmuls():
    """fp32 products in fp32 (no TF32), so that CUDA and CPU agree to float rounding."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _pair(dataset: Path, tmp_path: Path, **options) -> tuple[Trainer, Trainer]:
    """The same run on the CPU and on CUDA, from the same initial weights."""
    data = read_dataset(dataset)
    cpu = Trainer(TrainConfig.create(**{**SMALL, **options, "device": "cpu"}), data, tmp_path / "cpu")
    gpu = Trainer(TrainConfig.create(**{**SMALL, **options, "device": "cuda"}), data, tmp_path / "cuda")
    gpu.model.load_state_dict(cpu.model.state_dict())
    return cpu, gpu


def _batch(trainer: Trainer, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    order = torch.arange(len(trainer.store), device=trainer.device)
    ((width, slots),) = batch_shapes(trainer.store, order, trainer.config.max_length + 1, trainer.global_batch, SINGLE, range(step, step + 1))
    sequence = trainer.store.tail_windows(order[step * trainer.local_batch : (step + 1) * trainer.local_batch], width)
    return sequence[:, :-1], sequence[:, 1:], slots


def _same_steps(cpu: Trainer, gpu: Trainer, steps: int = 3) -> None:
    """Train both for `steps` steps on the same batches and the CPU's negatives; losses and weights agree."""
    for step in range(steps):
        inputs, targets, slots = _batch(cpu, step)
        negatives = cpu.negatives(inputs, EventSlots.select(inputs != 0, targets, slots))
        moved = Negatives(
            negatives.style,
            *[None if t is None else t.to(CUDA) for t in (negatives.uniform, negatives.uniform_valid, negatives.in_batch, negatives.in_batch_valid)],
        )
        gpu.negatives = lambda inputs, events, moved=moved: moved  # type: ignore[method-assign]
        cpu.negatives = lambda inputs, events, negatives=negatives: negatives  # type: ignore[method-assign]
        losses = []
        for trainer in (cpu, gpu):
            x, y = inputs.to(trainer.device), targets.to(trainer.device)
            losses.append(float(window_step(trainer, x, y, x != 0, slots, (x != 0).sum())))
        del cpu.negatives
        assert losses[1] == pytest.approx(losses[0], rel=1e-4), step
    for (name, a), b in zip(cpu.model.state_dict().items(), gpu.model.state_dict().values()):
        torch.testing.assert_close(b.cpu(), a, atol=2e-4, rtol=1e-3, msg=name)


@pytest.mark.parametrize(
    "options",
    [{}, {"optimizer": "sparse-adam"}, {"optimizer": "sparse-adagrad"}, {"optimizer": "adagrad"}],
    ids=["adam", "sparse-adam", "sparse-adagrad", "adagrad"],
)
def test_training_on_cuda_equals_the_cpu_in_fp32(dataset, tmp_path, options):
    _same_steps(*_pair(dataset, tmp_path, **options))


def test_rejection_logq_and_bias_on_cuda_equal_the_cpu(dataset, tmp_path):
    options = dict(reject_uniform_session_items=True, logq=1.0, negative_distribution="popularity", output_bias=True, share_embeddings=False)
    _same_steps(*_pair(dataset, tmp_path, **options))


def test_bf16_training_on_cuda_is_finite_and_close_to_fp32(dataset, tmp_path):
    cpu, gpu = _pair(dataset, tmp_path)
    bf16 = Trainer(TrainConfig.create(**{**SMALL, "device": "cuda", "precision": "bf16"}), read_dataset(dataset), tmp_path / "bf16")
    bf16.model.load_state_dict(cpu.model.state_dict())
    inputs, targets, slots = _batch(gpu, 0)
    events = EventSlots.select(inputs != 0, targets, slots)
    negatives = gpu.negatives(inputs, events)
    exact = gpu.loss(gpu.hidden(inputs, events), inputs, events, "mean")
    bf16.negatives = lambda inputs, events: negatives  # type: ignore[method-assign]
    with bf16.autocast():
        reduced = bf16.loss(bf16.hidden(inputs, events), inputs, events, "mean")
    assert math.isfinite(float(reduced.detach())) and float(reduced.detach()) == pytest.approx(float(exact.detach()), rel=0.02)
    result = invoke("train", str(dataset), *ARGS, "--device", "cuda", "--precision", "bf16", "--epochs", "1", "--out", str(tmp_path / "run"), "--json")
    assert result.exit_code == 0, result.stderr
    assert math.isfinite(json.loads(result.stdout)["loss"])


@pytest.mark.parametrize(
    "options",
    [{}, {"optimizer": "sparse-adam"}, {"loss": "ce", "topk": 0, "uniform_negatives": 0, "batch_negatives": 0}, {"reject_uniform_session_items": True}],
    ids=["adam", "sparse-adam", "ce", "rejection"],
)
def test_a_cuda_step_never_synchronises(dataset, tmp_path, options):
    trainer = Trainer(TrainConfig.create(**{**SMALL, **options, "device": "cuda", "precision": "bf16"}), read_dataset(dataset), tmp_path)
    shapes = [_batch(trainer, step) for step in range(3)]  # batch shapes are read once per epoch, before the steps
    window_step(trainer, shapes[0][0], shapes[0][1], shapes[0][0] != 0, shapes[0][2], (shapes[0][0] != 0).sum())  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for inputs, targets, slots in shapes[1:]:
            window_step(trainer, inputs, targets, inputs != 0, slots, (inputs != 0).sum())
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_compiled_training_on_cuda_equals_eager(dataset, tmp_path):
    losses = []
    for flags in (["--compile"], []):
        # no in-batch negatives: compiled steps round their event slots up, and the in-batch draw has a key per slot
        args = [*ARGS, "--batch-negatives", "0", "--dropout", "0", "--precision", "fp32", "--device", "cuda", "--epochs", "1", "--overfit-batches", "4"]
        result = invoke("train", str(dataset), *args, *flags, "--out", str(tmp_path / f"run{len(flags)}"), "--json")
        assert result.exit_code == 0, result.stderr
        losses.append(json.loads(result.stdout)["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)


def test_evaluation_and_recommendation_rank_as_on_the_cpu():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(hidden_size=32, max_length=20), n_items=5000).eval()
    on_cuda = SASRec(SASRecConfig(hidden_size=32, max_length=20), n_items=5000).eval().to(CUDA)
    on_cuda.load_state_dict(model.state_dict())
    sessions = make_sessions(400, 5000, np.random.default_rng(0))
    results = [
        accumulate(m, SessionStore(sessions, device, min_length=2), False, EvalOptions(cutoffs=(5, 20), chunk_size=1024)).result()
        for m, device in ((model, torch.device("cpu")), (on_cuda, CUDA))
    ]
    assert results[0]["n_targets"] == results[1]["n_targets"]
    for name, value in results[0].items():  # a near-tie may flip one comparison: one rank off by one
        assert results[1][name] == pytest.approx(value, abs=2 / results[0]["n_targets"]), name
    windows = torch.randint(1, 5001, (64, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        scores_cpu, ids_cpu = score_sessions(Scorer(model), windows, 20)
        scores_gpu, ids_gpu = score_sessions(Scorer(on_cuda), windows.to(CUDA), 20)
    torch.testing.assert_close(scores_gpu.cpu(), scores_cpu, atol=1e-4, rtol=1e-5)
    assert float((ids_gpu.cpu() == ids_cpu).float().mean()) > 0.99  # near-ties may swap


def test_a_model_trained_on_cuda_exports_to_onnx_with_parity(dataset, tmp_path):
    from tests.test_export import _check_onnx, _load

    run = tmp_path / "run"
    result = invoke("train", str(dataset), *ARGS, "--device", "cuda", "--epochs", "1", "--overfit-batches", "3", "--out", str(run))
    assert result.exit_code == 0, result.stderr
    result = invoke("export", str(run), "--out", str(tmp_path / "bundle"), "--format", "onnx")
    assert result.exit_code == 0, result.stderr
    _check_onnx(tmp_path / "bundle" / "model.onnx", _load(run), max_length=20)
