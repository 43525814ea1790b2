"""GRU4Rec+ as the reference's baseline: a GRU over a session's clicks, scored against the item table.

Training feeds one click per lane per step (`batching.Lanes`) and carries the hidden state between steps
without backpropagating through time. `original_gru` follows the original GRU4Rec: the input embedding has
3 x hidden columns that feed the gates directly (identity input weights, frozen), so it cannot be tied to
the output table. The defaults (model and training) are the reference's `configs/standard/gru4rec_*.json`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tron_cli.models import MODELS, ModelSpec, check_settings, setting
from tron_cli.models.base import SessionModel


@dataclass(frozen=True)
class GRU4RecConfig:
    hidden_size: int = setting(100, "Hidden size d.", reference="hidden_size")
    num_layers: int = setting(1, "Layers: transformer blocks, or GRU layers.", reference="num_layers")
    dropout: float = setting(0.0, "Dropout rate.", reference="dropout")
    max_length: int = setting(200, "Clicks the model reads (training uses the last max_length + 1 of each session).", reference="max_session_length")
    share_embeddings: bool = setting(True, "Tie input and output item embeddings.", reference="share_embeddings")
    output_bias: bool = setting(True, "Learn a bias per item.", reference="output_bias")
    original_gru: bool = setting(False, "The embedding feeds the gates directly (3 x hidden wide), as the original GRU4Rec.", reference="original_gru")
    final_activation: bool = setting(True, "ELU(0.5) on scores before the loss (the reference's GRU4Rec).", reference="final_activation")

    def __post_init__(self) -> None:
        check_settings(
            [
                (self.max_length >= 1, "--max-length must be at least 1"),
                (self.hidden_size >= 1 and self.num_layers >= 1, "--hidden-size and --num-layers must be at least 1"),
                (0 <= self.dropout < 1, "--dropout must be in [0, 1)"),
            ]
        )


# the reference's GRU4Rec+ training settings (configs/standard/gru4rec_*.json)
TRAINING_DEFAULTS = {
    "uniform_negatives": 2048,
    "batch_negatives": None,
    "loss": "bpr-max",
    "bpr_penalty": 0.5,
    "batch_size": 32,
    "lr": 0.2,
    "optimizer": "adagrad",
    "topk": 0,
}


class GRU4Rec(SessionModel):
    feeding = "lanes"
    prefix_states = True  # a GRU's state after click j never depends on later clicks

    def __init__(self, config: GRU4RecConfig, *, n_items: int):
        d = config.hidden_size
        d_in = 3 * d if config.original_gru else d
        # the reference initialises both tables with xavier_uniform(gain=1/sqrt(6))
        super().__init__(n_items, d, config.share_embeddings and not config.original_gru, config.output_bias, d_in=d_in, gain=6**-0.5)
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

    def session_states(self, items: Tensor) -> Tensor:
        return self.forward(items)

    def last_hidden(self, windows: Tensor) -> Tensor:
        """Padding fed to a GRU would change its state, so every row is first rotated to put its clicks in front
        (right-padded, as GRU4Rec reads sessions). The rotation is a gather from the row written twice, not a
        modulo, so that the same code exports to ONNX."""
        t = windows.shape[1]
        lengths = (windows != 0).sum(1)
        column = torch.arange(t, device=windows.device)
        right = torch.gather(torch.cat([windows, windows], 1), 1, column[None, :] + (t - lengths)[:, None])
        states = self.forward(right)  # (B, T, d)
        last = (lengths - 1).clamp(min=0)
        return torch.gather(states, 1, last[:, None, None].expand(-1, 1, states.shape[-1])).squeeze(1)

    def activate(self, scores: Tensor) -> Tensor:
        return F.elu(scores, 0.5) if self.config.final_activation else scores


MODELS.register(
    "gru4rec",
    ModelSpec(
        "gru4rec",
        GRU4Rec,
        config_class=GRU4RecConfig,
        summary="GRU4Rec+, the reference's RNN baseline (defaults: the reference's GRU4Rec+ settings).",
        training_defaults=TRAINING_DEFAULTS,
    ),
)
