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

from tron_cli.models.base import SessionModel
from tron_cli.training.config import TrainConfig


def build_optimizers(model: SessionModel, config: TrainConfig, scaled: bool) -> list[torch.optim.Optimizer]:
    """Dense Adam/Adagrad over everything, or a row-sparse optimiser for the item tables + the dense one for
    the rest. Fused (one kernel per step) unless gradients are loss-scaled (fp16)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    dense_class = torch.optim.Adagrad if config.optimizer.endswith("adagrad") else torch.optim.Adam
    fused = not scaled
    if not config.optimizer.startswith("sparse"):
        return [dense_class(trainable, lr=config.lr, fused=fused)]
    tables = {id(p) for p in model.table_parameters()}
    sparse_params = [p for p in trainable if id(p) in tables]
    dense_params = [p for p in trainable if id(p) not in tables]
    sparse = SparseAdam(sparse_params, lr=config.lr) if config.optimizer == "sparse-adam" else Adagrad(sparse_params, lr=config.lr)
    return [sparse, dense_class(dense_params, lr=config.lr, fused=fused)]


WHOLE_CLEAR = 8  # a gradient buffer is cleared whole once a step touched an eighth as many rows as it has


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
        buffer[0] = 0.0  # the padding row never moves
        table.grad = buffer
        swapped.append((table, grad, buffer, rows))
    try:
        yield
    finally:
        for table, grad, buffer, rows in swapped:
            # a memset runs at several times the speed of row writes: clearing 100,000 x 200 takes 1.1 ms, the
            # 35,000 rows (with repeats) a TRON XL step touched in it 2.9 ms (2 CPU cores)
            if rows.numel() * WHOLE_CLEAR >= buffer.shape[0]:
                buffer.zero_()
            else:
                buffer.index_fill_(0, rows, 0.0)
            table.grad = grad


def _entries(rows: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """(rows (n,), the summed gradient of each entry's row (n, d)) of the entries (rows, values) of an uncoalesced
    row-sparse gradient, sorted by row: every entry of a row carries the row's whole gradient, so that updates
    computed per entry agree and can all be written."""
    order = torch.argsort(rows, stable=True)
    rows, values = rows.index_select(0, order), values.index_select(0, order)
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]
    segment = torch.cumsum(first, 0) - 1  # (n,) run of equal rows
    sums = torch.zeros_like(values).scatter_add_(0, segment[:, None].expand_as(values), values)
    return rows, sums.index_select(0, segment)


def _write(table: Tensor, rows: Tensor, values: Tensor) -> None:
    """table[rows] = values (rows repeat with equal values)."""
    table.index_copy_(0, rows, values)


class _RowOptimizer(torch.optim.Optimizer):
    """A row-sparse optimiser: each parameter's step from the (rows, values) of its sparse gradient."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} takes row-sparse gradients only")
                rows, values = p.grad._indices()[0], p.grad._values()
                values = values * (rows != 0)[:, None]  # the padding row never moves
                self.step_rows(p, group, *_entries(rows, values))

    def step_rows(self, p: Tensor, group: dict, rows: Tensor, grad: Tensor) -> None:
        raise NotImplementedError


class SparseAdam(_RowOptimizer, torch.optim.SparseAdam):
    """torch's lazy SparseAdam (same state, same update of the touched rows), on uncoalesced gradients."""

    def step_rows(self, p: Tensor, group: dict, rows: Tensor, grad: Tensor) -> None:
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        exp_avg = state["exp_avg"].index_select(0, rows)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
        exp_avg = exp_avg + (grad - exp_avg) * (1 - beta1)
        exp_avg_sq = exp_avg_sq + (grad * grad - exp_avg_sq) * (1 - beta2)
        step_size = group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
        _write(state["exp_avg"], rows, exp_avg)
        _write(state["exp_avg_sq"], rows, exp_avg_sq)
        _write(p, rows, p.index_select(0, rows) - step_size * exp_avg / (exp_avg_sq.sqrt() + group["eps"]))


class Adagrad(_RowOptimizer, torch.optim.Adagrad):
    """torch's Adagrad on row-sparse gradients (same state, same update of the touched rows; untouched rows
    do not move, exactly as with a dense gradient), on uncoalesced gradients."""

    def step_rows(self, p: Tensor, group: dict, rows: Tensor, grad: Tensor) -> None:
        state = self.state[p]
        state["step"] += 1  # a CPU tensor, as torch keeps it: the rate below never reads it back to the host
        rate = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        total = state["sum"].index_select(0, rows) + grad * grad
        _write(state["sum"], rows, total)
        _write(p, rows, p.index_select(0, rows) - rate * grad / (total.sqrt() + group["eps"]))
