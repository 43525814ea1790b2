"""What the training loop tells the code around it: the end of each epoch, and the end of the run.

A callback is any object with these two methods; `Trainer.callbacks` holds them. Trackers (`tracking.py`)
record what they are told; `tron tune` reports each epoch's validation metric to Optuna and asks the loop to
stop a weak trial by returning True from `epoch_end`, the way early stopping stops a run.
"""

from __future__ import annotations

from typing import Any, Protocol


class Callback(Protocol):
    def epoch_end(self, record: dict[str, Any]) -> bool:
        """`record` is the epoch's line of history.jsonl; return True to stop training after this epoch."""
        ...

    def finish(self, summary: dict[str, Any]) -> None:
        """The run ended normally (all epochs, early stopping or a stop asked by a callback) with `summary`."""
        ...
