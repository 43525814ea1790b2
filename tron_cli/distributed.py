"""Data-parallel training with PyTorch DDP: `tron train --devices N` on one machine, or `torchrun` across nodes.

Every rank holds the train split on its device and takes its share of each global batch (the epoch order is
the same on all ranks); gradients are all-reduced by DDP, and the loss is normalised by the global number of
events, so N ranks compute exactly the gradient of one process with the same global batch. Row-sparse
gradients of the item tables (sparse optimisers) skip DDP's dense buckets and are averaged through an
all-gather of their (row, value) pairs instead. NCCL on CUDA, gloo on CPU. Only rank 0 writes files and progress.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tron_cli.errors import TronError, UsageError


@dataclass(frozen=True)
class Ranks:
    """This process's place among the data-parallel processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        from tron_cli.runtime import resolve_device

        device = resolve_device(name)
        if device.type == "cuda" and self.world > 1:
            return torch.device("cuda", self.local_rank)
        return device

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place; a no-op for a single process."""
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `tensor` (same shape on all ranks)."""
        if self.world == 1:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor)
        return parts

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


SINGLE = Ranks()


def from_environment(device_name: str) -> Ranks:
    """The ranks torchrun (or `launch`) describes in RANK / WORLD_SIZE / LOCAL_RANK; joins the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    if not dist.is_initialized():
        device = ranks.device(device_name)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://", rank=ranks.rank, world_size=world)
    return ranks


def average_sparse_gradients(parameters: list[torch.nn.Parameter], ranks: Ranks) -> None:
    """Make each sparse gradient the mean over ranks, as DDP does for dense ones: all-gather (rows, values)
    padded to the largest count, concatenate, coalesce (which sums duplicate rows), divide by N."""
    for parameter in parameters:
        grad = parameter.grad
        if grad is None or not grad.is_sparse:
            continue
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        count = torch.tensor([len(rows)], device=rows.device)
        largest = int(max(c.item() for c in ranks.all_gather(count)))
        padded_rows = torch.zeros(largest, dtype=rows.dtype, device=rows.device)
        padded_values = torch.zeros((largest, *values.shape[1:]), dtype=values.dtype, device=values.device)
        padded_rows[: len(rows)], padded_values[: len(rows)] = rows, values
        all_rows = torch.cat(ranks.all_gather(padded_rows))
        all_values = torch.cat(ranks.all_gather(padded_values))  # padding rows point at row 0 with zero values
        parameter.grad = torch.sparse_coo_tensor(all_rows[None], all_values / ranks.world, grad.shape).coalesce()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(local_rank: int, world: int, port: int, request, error_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(local_rank), LOCAL_RANK=str(local_rank))
    from tron_cli.train import train

    try:
        train(request)
    except TronError as error:
        if local_rank == 0:
            with open(error_path, "w") as handle:
                handle.write(f"{type(error).__name__}\n{error.line()}")
        raise SystemExit(error.exit_code) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(request, devices: int, report) -> dict:
    """Run `train(request)` in `devices` local processes; returns rank 0's summary."""
    import tempfile

    import torch.multiprocessing as mp

    from tron_cli import artifacts
    from tron_cli.train import prepare_run_dir

    if request.config.device == "cuda" or (request.config.device == "auto" and torch.cuda.is_available()):
        if torch.cuda.device_count() < devices:
            raise UsageError(f"--devices {devices}, but only {torch.cuda.device_count()} CUDA devices are visible")
    run_dir = prepare_run_dir(request)
    request = type(request)(**{**request.__dict__, "out": run_dir, "force": True}) if request.resume is None else request
    report.info(f"training on {devices} processes ({'NCCL' if torch.cuda.is_available() and request.config.device != 'cpu' else 'gloo'}) into {run_dir}")
    with tempfile.TemporaryDirectory() as scratch:
        error_path = os.path.join(scratch, "error")
        try:
            mp.start_processes(_worker, args=(devices, _free_port(), request, error_path), nprocs=devices, start_method="spawn")
        except mp.ProcessExitedException:
            if os.path.exists(error_path):
                from tron_cli import errors

                kind, message = open(error_path).read().split("\n", 1)
                error_class = getattr(errors, kind, TronError)
                raise error_class(message.rstrip(".")) from None
            raise TronError(f"a training process failed (see its output above); the run dir {run_dir} keeps the last checkpoint") from None
    summary = artifacts.read_json(run_dir / "summary.json", "summary")
    return {k: v for k, v in summary.items() if k not in ("schema", "tron_version")}
