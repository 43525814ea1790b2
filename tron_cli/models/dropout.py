"""Dropout for training on the CPU whose random mask costs a quarter of torch's, and attention that uses it.

torch's CPU dropout draws one Bernoulli number per element from the global generator, one after another (about
7 ns an element here): with SASRec's nine dropouts per step, a fifth of the small config's step on two cores. Here
each 64-bit draw of the same generator gives four 16-bit lanes, and an element is dropped where its lane is below
round(p * 65536): the rate is p to within 1 / 131072 (0 below p = 7.6e-6), and kept values are scaled by
1 / (1 - that rate), so that the expectation is exact. Other devices and compiled graphs keep torch's own dropout
(fused kernels, and a generator the graph can capture).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LANES = 4  # 16-bit lanes per 64-bit draw
LEVELS = 1 << 16


def _native(x: Tensor) -> bool:
    """Whether torch's own dropout serves `x` best: off the CPU (fused kernels), and in compiled graphs."""
    return x.device.type != "cpu" or torch.compiler.is_compiling()


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """`F.dropout(x, p, training)` with the mask drawn four elements per 64-bit draw on the CPU."""
    if not training or p == 0:
        return x
    if _native(x):
        return F.dropout(x, p, True)
    threshold = round(p * LEVELS)  # lanes read as -32768..32767: dropped below threshold - 32768
    n = x.numel()
    draws = torch.randint(-(1 << 63), (1 << 63) - 1, (-(-n // LANES),), dtype=torch.int64)
    lanes = draws.view(torch.int16)[:n].view(x.shape)
    mask = (lanes >= threshold - LEVELS // 2).to(x.dtype) * (LEVELS / (LEVELS - threshold))  # kept: 1 / (1 - rate)
    return x * mask


class AttentionMask:
    """Which keys each query may see, `allowed` (B, 1, T, T) bool, and its additive form (0 or -inf per key,
    (B H, T, T)), built once per forward pass for all of its layers."""

    def __init__(self, allowed: Tensor):
        self.allowed = allowed
        self._additive: Tensor | None = None

    def additive(self, heads: int) -> Tensor:
        if self._additive is None:
            b, _, t, _ = self.allowed.shape
            zeros = torch.zeros(self.allowed.shape, device=self.allowed.device)
            self._additive = zeros.masked_fill_(~self.allowed, float("-inf")).expand(b, heads, t, t).reshape(b * heads, t, t)
        return self._additive


def attention(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask, p: float, training: bool) -> Tensor:
    """`F.scaled_dot_product_attention(q, k, v, attn_mask=mask.allowed, dropout_p=p if training else 0)`: q, k, v
    (B, H, T, d/H). With dropout on the CPU, written out so that the attention weights' dropout is `dropout`
    above (torch's own path there draws the slow mask), the scale and the mask fused into one `baddbmm`."""
    if not training or p == 0 or _native(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.allowed, dropout_p=p if training else 0.0)
    b, h, t, size = q.shape
    scores = torch.baddbmm(mask.additive(h), q.reshape(b * h, t, size), k.reshape(b * h, t, size).transpose(1, 2), alpha=1.0 / math.sqrt(size))
    weights = dropout(torch.softmax(scores, dim=-1), p, True)  # (B H, T, T)
    return (weights @ v.reshape(b * h, t, size)).view(b, h, t, size)
