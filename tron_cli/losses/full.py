"""The full loss: softmax cross-entropy over the whole catalogue at every position (the "enhanced loss" of SASRec+),
computed chunk by chunk so that it never materialises the (E, N) scores. It draws no negatives."""

from __future__ import annotations

import torch
from torch import Tensor

from tron_cli.losses import LOSSES, Loss
from tron_cli.options import Option


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Softmax cross-entropy of hidden (E, d) over items 1..N of table (N+1, d) [+ bias (N+1, 1)], chunk by chunk.

    Forward keeps an online log-sum-exp; backward recomputes each chunk's scores and accumulates
    d/dh = sum_c (p_c - y_c) W_c and d/dW_c = (p_c - y_c)^T h, so peak memory is E x chunk, never E x N.
    When the whole catalogue is one chunk, forward's (E, N) scores exist anyway: they are turned into the softmax
    in place and kept for backward, which then skips a product and an exp pass. Arithmetic is in fp32 at least
    (fp64 inputs stay fp64).
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, table: Tensor, bias: Tensor | None, targets: Tensor, chunk: int) -> Tensor:
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        h = hidden.to(dtype)
        probs = torch.empty(0, dtype=dtype, device=h.device)
        if table.shape[0] - 1 <= chunk:
            scores = _chunk_scores(h, table, bias=bias, start=1, chunk=chunk)  # (E, N)
            lse = torch.logsumexp(scores, dim=1)
            probs = scores.sub_(lse[:, None]).exp_()  # (E, N) softmax, in the scores' memory
        else:
            running_max = torch.full((h.shape[0],), float("-inf"), dtype=dtype, device=h.device)
            running_sum = torch.zeros(h.shape[0], dtype=dtype, device=h.device)
            for start in range(1, table.shape[0], chunk):
                scores = _chunk_scores(h, table, bias=bias, start=start, chunk=chunk)  # (E, C)
                new_max = torch.maximum(running_max, scores.max(dim=1).values)
                running_sum = running_sum * torch.exp(running_max - new_max) + torch.exp(scores - new_max[:, None]).sum(1)
                running_max = new_max
            lse = running_max + torch.log(running_sum)
        target_scores = (h * table.index_select(0, targets).to(dtype)).sum(-1)
        if bias is not None:
            target_scores = target_scores + bias[targets, 0].to(dtype)
        ctx.save_for_backward(hidden, table, bias if bias is not None else torch.empty(0), targets, lse, probs)
        ctx.chunk = chunk
        ctx.has_bias = bias is not None
        return lse - target_scores

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        hidden, table, bias, targets, lse, kept = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        dtype = lse.dtype
        h = hidden.to(dtype)
        grad_loss = grad_loss.to(dtype)
        grad_hidden = torch.zeros_like(h)
        grad_table = torch.zeros(table.shape, dtype=dtype, device=table.device)
        grad_bias = torch.zeros(table.shape[0], 1, dtype=dtype, device=table.device) if bias is not None else None
        for start in range(1, table.shape[0], ctx.chunk):
            stop = min(start + ctx.chunk, table.shape[0])
            softmax = kept if kept.numel() else torch.exp(_chunk_scores(h, table, bias=bias, start=start, chunk=ctx.chunk) - lse[:, None])
            probs = softmax * grad_loss[:, None]  # (E, C)
            grad_hidden += probs @ table[start:stop].to(dtype)
            grad_table[start:stop] += probs.T @ h
            if grad_bias is not None:
                grad_bias[start:stop, 0] += probs.sum(0)
        # the target term: d(-s_target)/ds = -1 per event
        grad_hidden -= grad_loss[:, None] * table[targets].to(dtype)
        grad_table.index_add_(0, targets, -grad_loss[:, None] * h)
        if grad_bias is not None:
            grad_bias.index_add_(0, targets, -grad_loss[:, None])
        return (
            grad_hidden.to(hidden.dtype),
            grad_table.to(table.dtype),
            grad_bias.to(table.dtype) if grad_bias is not None else None,
            None,
            None,
        )


def _chunk_scores(h: Tensor, table: Tensor, bias: Tensor | None, start: int, chunk: int) -> Tensor:
    scores = h @ table[start : start + chunk].to(h.dtype).T
    if bias is not None:
        scores += bias[start : start + chunk, 0].to(h.dtype)
    return scores


def full_cross_entropy(hidden: Tensor, table: Tensor, bias: Tensor | None, targets: Tensor, chunk: int = 65536) -> Tensor:
    """(E,) cross-entropy of each target against the whole catalogue (row 0, padding, excluded)."""
    return _ChunkedCrossEntropy.apply(hidden, table, bias, targets, chunk)


LOSSES.register(
    "ce",
    Loss(
        "ce",
        "full cross-entropy over the whole catalogue, chunked (no negatives)",
        None,
        (
            Option(
                "ce_chunk",
                65536,
                help="Catalogue items scored at once by --loss ce (bounds its memory).",
                valid=lambda n: isinstance(n, int) and not isinstance(n, bool) and n >= 1,
                requirement="must be at least 1",
            ),
        ),
        sampled=False,
    ),
)
