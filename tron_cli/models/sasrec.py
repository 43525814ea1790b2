"""SASRec as TRON uses it: right-aligned learned positions, sqrt(d) scaling, pre-LN blocks, final LayerNorm.

Sequences are left-padded (item 0) so that the most recent click always sits in the last position; a batch
may be shorter than `max_length` (its all-padding left columns trimmed), positions stay right-aligned.
Attention is causal, padded keys are masked, and every position may attend to itself (no NaN rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tron_cli.models.scoring import ItemScorer


@dataclass(frozen=True)
class SASRecConfig:
    n_items: int
    hidden_size: int = 200
    num_layers: int = 2
    num_heads: int = 1
    dropout: float = 0.05
    max_length: int = 50
    share_embeddings: bool = True
    output_bias: bool = False
    positions: str = "right"  # right: the last click gets the last position (TRON); left: the first click gets 0


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + FFN(LN(x)); FFN width = d, ReLU."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, d)
        self.ff2 = nn.Linear(d, d)
        # as nn.MultiheadAttention: xavier input projection, zero biases
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        b, t, d = x.shape
        h = self.norm1(x)
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, d/H)
        attention = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        x = x + F.dropout(self.out(attention.transpose(1, 2).reshape(b, t, d)), self.dropout, self.training)
        h = self.norm2(x)
        h = self.ff2(F.dropout(F.relu(self.ff1(h)), self.dropout, self.training))
        return x + F.dropout(h, self.dropout, self.training)


class SASRec(ItemScorer):
    def __init__(self, config: SASRecConfig):
        d = config.hidden_size
        super().__init__(config.n_items, d, config.share_embeddings, config.output_bias)
        self.config = config
        self.position = nn.Parameter(torch.empty(config.max_length, d))
        nn.init.xavier_uniform_(self.position)
        self.blocks = nn.ModuleList(Block(d, config.num_heads, config.dropout) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(d)
        self.scale = math.sqrt(d)

    def _positions(self, items: Tensor) -> Tensor:
        """(T, d) or (B, T, d) position embeddings of a left-padded batch."""
        t = items.shape[1]
        if self.config.positions == "right":
            return self.position[-t:]
        # left: count from each session's first click, so a window's states do not depend on what follows it
        # (the state after click j is the same in a pass over the whole session and over its first j clicks)
        start = (items == 0).sum(1, keepdim=True)  # (B, 1) padding columns
        return self.position[(torch.arange(t, device=items.device)[None, :] - start).clamp(min=0)]

    def forward(self, items: Tensor, sparse: bool = False) -> Tensor:
        """(B, T) left-padded item ids, T <= max_length -> (B, T, d) hidden states; position t predicts the next click."""
        t = items.shape[1]
        real = items != 0  # (B, T)
        x = self.embed(items, sparse) * self.scale + self._positions(items)
        x = F.dropout(x, self.config.dropout, self.training)
        column = torch.arange(t, device=items.device)
        # (B, 1, T, T): query i sees key j <= i when j is a real click; it always sees itself (no NaN rows).
        # Built from aranges (not torch.eye), so that every ONNX exporter can trace it.
        allowed = ((column[:, None] >= column[None, :]) & real[:, None, :]) | (column[:, None] == column[None, :])
        allowed = allowed[:, None]
        for block in self.blocks:
            x = block(x, allowed)
        return self.final_norm(x)

    def last_hidden(self, items: Tensor) -> Tensor:
        """(B, T) left-padded windows -> (B, d): the state after each window's last click."""
        return self.forward(items)[:, -1]
