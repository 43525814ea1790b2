"""The optimisers, and how they take the row-sparse gradients of the item tables.

A sampled loss looks item rows up with row-sparse gradients (`models.base.table_rows`): a step never writes a
gradient over the whole (N+1, d) table, only its few touched rows (uncoalesced: a row may appear several
times, and its gradient is the sum). What each optimiser does with them:

- `adam`, `adagrad` (dense, the reference's): exactly the update a dense gradient gives. Adam's moments decay
  and move every row each step, so dense Adam must pass over the whole table (its floor: read parameter,
  gradient and two moments, write three, once: the fused kernel); what it does not need is a dense gradient
  built by autograd each step. The touched rows are added into a persistent zero buffer, the optimiser steps
  on it, and only those rows are zeroed again (`dense_table_gradients`).
- `sparse-adam`, `sparse-adagrad` (row-sparse, lazy): only the touched rows move; their moments wait.
  `SparseAdam` and `Adagrad` (here) update the rows without coalescing the gradient first (a sort with a
  data-dependent size, i.e. a device sync): each entry of a row computes the same update, written once per
  entry.

No optimiser step reads a value back from the device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor

from tron_cli.config import TrainConfig
from tron_cli.models.base import SessionModel


def build_optimizers(model: SessionModel, config: TrainConfig, scaled: bool) -> list[torch.optim.Optimizer]:
    """Dense Adam/Adagrad over everything, or a row-sparse optimiser for the item tables + the dense one for
    the rest. Fused (one kernel per step) unless gradients are loss-scaled (fp16)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    dense_class = torch.optim.Adagrad if config.optimizer.endswith("adagrad") else torch.optim.Adam
    fused = {} if scaled else {"fused": True}
    if not config.optimizer.startswith("sparse"):
        return [dense_class(trainable, lr=config.lr, **fused)]
    tables = {id(p) for p in model.table_parameters()}
    sparse_params = [p for p in trainable if id(p) in tables]
    dense_params = [p for p in trainable if id(p) not in tables]
    sparse = SparseAdam(sparse_params, lr=config.lr) if config.optimizer == "sparse-adam" else Adagrad(sparse_params, lr=config.lr)
    return [sparse, dense_class(dense_params, lr=config.lr, **fused)]


@contextlib.contextmanager
def dense_table_gradients(tables: list[torch.nn.Parameter], buffers: dict[torch.nn.Parameter, Tensor]) -> Iterator[None]:
    """Within the block, each table's row-sparse gradient is a dense one: its rows added into a persistent
    zero buffer (kept in `buffers`). After it, those rows are zero again and the sparse gradient is back."""
    swapped = []
    for table in tables:
        grad = table.grad
        if grad is None or not grad.is_sparse:
            continue
        buffer = buffers.get(table)
        if buffer is None:
            buffer = buffers[table] = torch.zeros_like(table)
        rows = grad._indices()[0]
        buffer.index_add_(0, rows, grad._values())
        table.grad = buffer
        swapped.append((table, grad, buffer, rows))
    try:
        yield
    finally:
        for table, grad, buffer, rows in swapped:
            buffer.index_fill_(0, rows, 0.0)
            table.grad = grad


def _entries(grad: Tensor) -> tuple[Tensor, Tensor]:
    """(rows (n,), summed gradient of each entry's row (n, ...)) of an uncoalesced sparse gradient: every
    entry of a row carries the row's whole gradient, so updates computed per entry agree."""
    rows, values = grad._indices()[0], grad._values()
    order = torch.argsort(rows, stable=True)
    rows, values = rows[order], values[order]
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]
    segment = torch.cumsum(first, 0) - 1  # (n,) run of equal rows
    sums = torch.zeros_like(values).index_add_(0, segment, values)
    return rows, sums[segment]


class SparseAdam(torch.optim.SparseAdam):
    """torch's lazy SparseAdam (same state, same update of the touched rows), on uncoalesced gradients."""

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("SparseAdam takes row-sparse gradients only")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                rows, grad = _entries(p.grad)
                exp_avg = state["exp_avg"][rows]
                exp_avg_sq = state["exp_avg_sq"][rows]
                exp_avg = exp_avg + (grad - exp_avg) * (1 - beta1)
                exp_avg_sq = exp_avg_sq + (grad * grad - exp_avg_sq) * (1 - beta2)
                step_size = group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
                state["exp_avg"].index_put_((rows,), exp_avg)
                state["exp_avg_sq"].index_put_((rows,), exp_avg_sq)
                p.index_put_((rows,), p[rows] - step_size * exp_avg / (exp_avg_sq.sqrt() + group["eps"]))


class Adagrad(torch.optim.Adagrad):
    """torch's Adagrad on row-sparse gradients (same state, same update of the touched rows; untouched rows
    do not move, exactly as with a dense gradient), on uncoalesced gradients. Named `Adagrad` in checkpoints."""

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("Adagrad takes row-sparse gradients only")
                state = self.state[p]
                state["step"] += 1
                rate = group["lr"] / (1 + (float(state["step"]) - 1) * group["lr_decay"])
                rows, grad = _entries(p.grad)
                total = state["sum"][rows] + grad * grad
                state["sum"].index_put_((rows,), total)
                p.index_put_((rows,), p[rows] - rate * grad / (total.sqrt() + group["eps"]))
