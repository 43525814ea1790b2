"""GRU4Rec+ as the reference's baseline: a GRU over a session's clicks, scored against the item table.

Training feeds one click per lane per step (`batching.Lanes`) and carries the hidden state between steps
without backpropagating through time. `original_gru` follows the original GRU4Rec: the input embedding has
3 x hidden columns that feed the gates directly (identity input weights, frozen), so it cannot be tied to
the output table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tron_cli.models.scoring import ItemScorer


@dataclass(frozen=True)
class GRU4RecConfig:
    n_items: int
    hidden_size: int = 100
    num_layers: int = 1
    dropout: float = 0.0
    share_embeddings: bool = True
    output_bias: bool = True
    original_gru: bool = False


class GRU4Rec(ItemScorer):
    def __init__(self, config: GRU4RecConfig):
        d = config.hidden_size
        d_in = 3 * d if config.original_gru else d
        # the reference initialises both tables with xavier_uniform(gain=1/sqrt(6))
        super().__init__(config.n_items, d, config.share_embeddings and not config.original_gru, config.output_bias, d_in=d_in, gain=6**-0.5)
        self.config = config
        self.gru = nn.GRU(d_in, d, config.num_layers, dropout=config.dropout if config.num_layers > 1 else 0.0, batch_first=True)
        if config.original_gru:
            self.gru.weight_ih_l0 = nn.Parameter(torch.eye(3 * d), requires_grad=False)

    def initial_state(self, batch_size: int, device: torch.device) -> Tensor:
        return torch.zeros(self.config.num_layers, batch_size, self.config.hidden_size, device=device)

    def step(self, items: Tensor, state: Tensor, reset: Tensor, sparse: bool = False) -> tuple[Tensor, Tensor]:
        """One click per lane: items (B,), state (L, B, d), reset (B,) bool -> (output (B, d), new state)."""
        state = state * (~reset).to(state.dtype)[None, :, None]
        output, state = self.gru(self.embed(items, sparse).unsqueeze(1), state)
        return output.squeeze(1), state

    def forward(self, items: Tensor) -> Tensor:
        """(B, T) right-padded sessions -> (B, T, d): the state after each click (padding positions are junk)."""
        output, _ = self.gru(self.embed(items), self.initial_state(items.shape[0], items.device))
        return output
