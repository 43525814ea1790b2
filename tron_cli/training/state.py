"""Where a run stands: epochs done, position inside the current epoch, the best epoch so far, the history."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainState:
    epoch: int = 0  # epochs finished
    done: int = 0  # sessions of this epoch's order already trained on (global), so resuming works with any N
    global_step: int = 0
    best: dict[str, Any] | None = None  # {"epoch": n, metric: value, ...} of the selected epoch
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per finished epoch
    # an interrupted epoch's figures so far (loss_sum, events, sessions, seconds), so that its history line covers
    # the whole epoch when it is resumed
    partial: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainState:
        return cls(**{key: values[key] for key in ("epoch", "done", "global_step", "best", "bad_epochs", "history", "partial") if key in values})
