"""Data-parallel training on CPU with gloo: two processes behave like one process with the same global batch."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import invoke, tiny_train_args

# in-batch negatives come from each rank's own sessions, so they are off here; the batchwise set is shared
COMMON = [
    *tiny_train_args(
        uniform_negatives=128,
        batch_size=None,
        batch_negatives=0,
        max_length=12,
        dropout=0,
        shuffle="shuffle_without_replacement",
        seed=3,
        epochs=1,
        overfit_batches=6,
    ),
]


@pytest.fixture(scope="module")
def two_process_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    result = invoke("train", str(tiny_dataset), *COMMON, "--batch-size", "8", "--devices", "2", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    return out


def test_two_processes_equal_one_with_the_same_global_batch(two_process_run, tiny_dataset, tmp_path):
    single = tmp_path / "single"
    result = invoke("train", str(tiny_dataset), *COMMON, "--batch-size", "16", "--out", str(single), "--json")
    assert result.exit_code == 0, result.stderr
    a = json.loads((two_process_run / "history.jsonl").read_text().splitlines()[0])
    b = json.loads((single / "history.jsonl").read_text().splitlines()[0])
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert a["step"] == b["step"] == 6
    # weights agree up to Adam's amplification of summation-order noise in near-zero gradients (lr x steps)
    weights_a, weights_b = load_file(two_process_run / "model.safetensors"), load_file(single / "model.safetensors")
    for name in weights_a:
        torch.testing.assert_close(weights_a[name], weights_b[name], atol=6 * 5e-4, rtol=0)


def test_two_process_run_has_the_single_process_layout_and_evaluates(two_process_run):
    assert {p.name for p in two_process_run.iterdir() if not p.name.startswith(".")} == {
        "config.json",
        "model.safetensors",
        "history.jsonl",
        "checkpoint",
        "summary.json",
    }
    assert json.loads((two_process_run / "config.json").read_text())["world_size"] == 2
    result = invoke("evaluate", str(two_process_run), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["n_targets"] > 0


def test_resume_with_another_number_of_processes(two_process_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_process_run, run)
    result = invoke("train", "--resume", str(run), "--epochs", "2")
    assert result.exit_code == 0, result.stderr
    assert "negatives differ" in result.stderr
    assert [json.loads(line)["epoch"] for line in (run / "history.jsonl").read_text().splitlines()] == [1, 2]


def test_sparse_optimizer_on_two_processes_equals_one(tiny_dataset, tmp_path):
    losses = []
    for devices, batch in (("2", "8"), ("1", "16")):
        out = tmp_path / f"run{devices}"
        result = invoke("train", str(tiny_dataset), *COMMON, "--batch-size", batch, "--optimizer", "sparse-adam", "--devices", devices, "--out", str(out))
        assert result.exit_code == 0, result.stderr
        state = json.loads((out / "checkpoint" / "state.json").read_text())
        assert [o["type"] for o in state["optimizers"]] == ["SparseAdam", "Adam"]
        losses.append(json.loads((out / "history.jsonl").read_text().splitlines()[0])["loss"])
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def _average_worker(rank: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    from tron_cli.training.distributed import Ranks, average_sparse_gradients

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    table = torch.nn.Parameter(torch.zeros(6, 2))
    rows = [torch.tensor([1, 3, 3]), torch.tensor([3, 5])][rank]  # rank 0 has two entries for row 3
    table.grad = torch.sparse_coo_tensor(rows[None], torch.ones(len(rows), 2) * (rank + 1), (6, 2))
    average_sparse_gradients([table], Ranks(rank, 2, rank))
    if rank == 0:
        with open(out, "w") as handle:
            handle.write(json.dumps(table.grad.to_dense().tolist()))
    dist.destroy_process_group()


def test_sparse_gradients_are_averaged_over_ranks(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "grad.json"
    mp.start_processes(_average_worker, args=(port, str(out)), nprocs=2, start_method="spawn")
    dense = json.loads(out.read_text())
    # rank 0: row 1 -> 1, row 3 -> 2; rank 1: rows 3 and 5 -> 2 each; mean over the 2 ranks
    assert dense == [[0, 0], [0.5, 0.5], [0, 0], [2, 2], [0, 0], [1, 1]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_torchrun_nodes_on_loopback_equal_one_process(tiny_dataset, tmp_path):
    """docs/distributed.md's multi-node command, run as two "nodes" on this machine: two torchrun agents with
    --nnodes 2 meet at a c10d rendezvous on 127.0.0.1 and train one run with gloo, equal to one process."""
    import os
    import subprocess
    import sys

    out, port = tmp_path / "two-nodes", _free_port()
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
    command += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "tron-loopback", "--max-restarts", "0"]
    train = ["-m", "tron_cli", "-q", "train", str(tiny_dataset), *COMMON, "--batch-size", "8", "--out", str(out)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen([*command, "--node-rank", str(rank), *train], env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    single = tmp_path / "single"
    result = invoke("train", str(tiny_dataset), *COMMON, "--batch-size", "16", "--out", str(single), "--json")
    assert result.exit_code == 0, result.stderr
    a = json.loads((out / "history.jsonl").read_text().splitlines()[0])
    b = json.loads((single / "history.jsonl").read_text().splitlines()[0])
    assert a["step"] == b["step"] == 6
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
