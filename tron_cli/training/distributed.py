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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


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


def leave() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(entrypoint: Callable[..., Any], args: tuple[Any, ...], devices: int) -> bool:
    """Run `entrypoint(*args)` in `devices` local processes with torch's elastic launcher (the machinery of
    torchrun: rendezvous on a free local port, RANK / WORLD_SIZE / LOCAL_RANK set for each process, the group
    stopped when one fails). True when every process succeeded."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    with socket.socket() as probe:  # a free port for the rendezvous store
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=devices,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{port}",
        rdzv_configs={"is_host": True},
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    logger = logging.getLogger("torch.distributed.elastic")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the agent's progress lines are not the user's business
    try:
        elastic_launch(config, entrypoint)(*args)
        return True
    except ChildFailedError:
        return False
    finally:
        logger.setLevel(level)
