"""What every model is: item tables that score (`ItemScorer`) plus the interface the stages use (`SessionModel`).

A score is `h · W[item] + b[item]`; with a temperature tau > 0 it is `cos(h, W[item]) / tau + b[item]` (NISER's
normalised scores: an item's vector length no longer carries its popularity, the bias may). The reference implements the bias as one more embedding column against a
constant 1; a separate vector is the same function. Row 0 is padding: zero, and never updated. Lookups can
produce row-sparse gradients (`sparse=True`): training does, so that a step never writes a gradient over the
whole table (`training/optim.py` hands them to the optimisers).

`SessionModel` is all that training, validation, evaluation, recommendation and export know of a model: how
it is fed in training (`feeding`), the state after the last click of left-padded windows (`last_hidden`), and
for models whose state after click j depends only on clicks 1..j, all states of a session in one pass.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FEEDINGS = ("windows", "lanes")


class ItemScorer(nn.Module):
    def __init__(self, n_items: int, d: int, share_embeddings: bool, output_bias: bool, d_in: int | None = None, gain: float = 1.0, temperature: float = 0.0):
        super().__init__()
        self.n_items = n_items
        self.temperature = temperature
        d_in = d if d_in is None else d_in
        self.item_embedding = nn.Parameter(_xavier(n_items + 1, d_in, gain))
        self.tied = share_embeddings and d_in == d
        self.output_embedding = None if self.tied else nn.Parameter(_xavier(n_items + 1, d, gain))
        self.output_bias = nn.Parameter(torch.zeros(n_items + 1, 1)) if output_bias else None  # (N+1, 1): a one-column table, so lookups can be row-sparse

    def embed(self, items: Tensor, sparse: bool = False) -> Tensor:
        return table_rows(self.item_embedding, items, sparse, padding_idx=0)

    def _stored_output_table(self) -> Tensor:
        return self.item_embedding if self.output_embedding is None else self.output_embedding

    def _unit(self, vectors: Tensor) -> Tensor:
        """Output vectors as scores use them: unit length under a temperature (padding's zeros stay zero)."""
        return F.normalize(vectors, dim=-1) if self.temperature > 0 else vectors

    def output_state(self, hidden: Tensor) -> Tensor:
        """A model's final states (..., d) as scores use them: unit length divided by the temperature, if any."""
        return F.normalize(hidden, dim=-1) / self.temperature if self.temperature > 0 else hidden

    @property
    def output_size(self) -> int:
        """d of the output vectors (and of the states scored against them)."""
        return self._stored_output_table().shape[1]

    def output_table(self) -> Tensor:
        """(N+1, d) output vectors as scores use them; row 0 is padding."""
        return self._unit(self._stored_output_table())

    def output_rows(self, items: Tensor) -> Tensor:
        """(..., d) output vectors of `items` as scores use them, without touching the rest of the table."""
        return self._unit(self._stored_output_table()[items])

    def lookup(self, items: Tensor, sparse: bool = False) -> tuple[Tensor, Tensor | None]:
        """Output vectors (..., d) and biases (...) or None of `items`, row-sparse gradients with `sparse`."""
        vectors = self._unit(table_rows(self._stored_output_table(), items, sparse, padding_idx=0))
        bias = table_rows(self.output_bias, items, sparse).squeeze(-1) if self.output_bias is not None else None
        return vectors, bias

    def score(self, hidden: Tensor, items: Tensor, sparse: bool = False) -> Tensor:
        """hidden (..., d) against items (..., K) -> (..., K) scores, with gradients to the looked-up rows only."""
        vectors, bias = self.lookup(items, sparse)  # (..., K, d), (..., K)
        # a broadcast product and sum, not a batched matmul: E tiny (K x d) @ (d x 1) products are slow on CPU
        scores = (vectors.to(hidden.dtype) * hidden.unsqueeze(-2)).sum(-1)
        return scores if bias is None else scores + bias.to(scores.dtype)

    def score_all(self, hidden: Tensor, start: int = 1, stop: int | None = None) -> Tensor:
        """hidden (Q, d) against catalogue items start..stop-1 -> (Q, stop - start), in fp32."""
        stop = self.n_items + 1 if stop is None else stop
        scores = hidden.float() @ self._unit(self._stored_output_table()[start:stop]).float().T
        if self.output_bias is not None:
            scores = scores + self.output_bias[start:stop, 0].float()
        return scores

    def table_parameters(self) -> list[nn.Parameter]:
        """The (N+1)-row parameters, which the row-sparse optimisers own."""
        return [p for p in (self.item_embedding, self.output_embedding, self.output_bias) if p is not None]


def table_rows(table: Tensor, items: Tensor, sparse: bool, padding_idx: int | None = None) -> Tensor:
    """table[items] (..., d), with a row-sparse gradient (`sparse`) or a dense one. The row-sparse gradient keeps
    the padding row's entries (dropping them is a boolean selection, which waits for the device): the
    optimisers never update row 0 (`training/optim.py`)."""
    if sparse:
        return _sparse_rows(table, items)
    return F.embedding(items, table, padding_idx=padding_idx)


def _plain_sparse_rows(table: Tensor, items: Tensor) -> Tensor:
    return F.embedding(items, table, sparse=True)


_sparse_rows = _plain_sparse_rows


def keep_sparse_lookups_eager() -> None:
    """Before torch.compile: a compiled graph cannot produce a sparse gradient, so the row-sparse lookup runs eagerly
    between graphs. Done here, not with a decorator at import, because `torch.compiler.disable` imports
    torch._dynamo: 1.4 s of the start of every process that loads a model, compiled or not."""
    global _sparse_rows
    _sparse_rows = torch.compiler.disable(_plain_sparse_rows)


class SessionModel(ItemScorer):
    """The interface of every model. Subclasses set `feeding` and implement `last_hidden` and their training
    forward: `forward(items (B, T), sparse) -> (B, T, d)` for `feeding = "windows"` (every position of
    left-padded windows predicts the next click), or `initial_state` + `step` for `feeding = "lanes"`
    (GRU4Rec's session-parallel mini-batches, one click per lane per step)."""

    feeding: ClassVar[str] = "windows"
    # True when `forward(items, sparse, events)` accepts flat positions `events` (E,) into the (B, T) window
    # (B * T for an empty slot) and returns only their states (E, d): training then computes nothing for padding
    forward_events: ClassVar[bool] = False
    # True when forward over a right-padded session gives at each click the state its prefix alone would give:
    # evaluation then reads every target of a session from one pass instead of one window per target
    prefix_states: ClassVar[bool] = False
    config: Any

    @property
    def max_length(self) -> int:
        """Clicks of a session the model reads: the most recent ones."""
        return int(self.config.max_length)

    @property
    def bounded_length(self) -> bool:
        """Whether inputs longer than `max_length` are impossible (learned positions), not merely unused."""
        return False

    def last_hidden(self, windows: Tensor) -> Tensor:
        """(B, T) left-padded windows of dense ids (0 = padding), T <= max_length -> (B, d): the state after each
        row's last click, which predicts its next click."""
        raise NotImplementedError

    def session_states(self, items: Tensor) -> Tensor:
        """(B, T) right-padded sessions -> (B, T, d): the state after each click (models with `prefix_states`)."""
        raise NotImplementedError

    @property
    def preference_input(self) -> bool:
        """Whether the model reads a preference vector [click weight, order weight] (MultiTRON)."""
        return False

    def use_order_weight(self, weight: float) -> None:
        """Read the preference [1 - weight, weight] from now on when none is given (models with `preference_input`)."""
        raise NotImplementedError(f"{type(self).__name__} has no preference input")

    def activate(self, scores: Tensor) -> Tensor:
        """Scores as the training loss sees them (GRU4Rec+ passes them through ELU); ranking never needs this."""
        return scores


def _xavier(rows: int, columns: int, gain: float) -> Tensor:
    weight = torch.empty(rows, columns)
    nn.init.xavier_uniform_(weight, gain=gain)
    weight[0] = 0.0
    return weight
