"""How one epoch feeds a model, by the model's declared `feeding`.

- `windows` (SASRec): each step takes the next global batch of the epoch's order, the last max_length + 1
  clicks of each session left-padded, and every real position predicts the next click. Data-parallel ranks
  take equal shares of each global batch; the loss is normalised by the events of the whole global batch.
  An epoch can stop after any step and resume there (`TrainState.done`).
- `lanes` (GRU4Rec+): session-parallel mini-batches, one click per lane per step, the hidden state carried
  between steps without backpropagation through time; one device, resumable at epoch boundaries.

Each returns (mean loss per target event, sessions, target events) of the epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import torch

from tron_cli.batching import Lanes, SessionStore
from tron_cli.distributed import Ranks
from tron_cli.errors import Interrupted
from tron_cli.reporting import Reporter
from tron_cli.training.state import TrainState
from tron_cli.training.stop import StopRequest

LOG_EVERY = 20  # steps between device syncs for the progress bar and the NaN check


class Trainer(Protocol):
    """What an epoch needs of the loop (`training.loop.Trainer`)."""

    config: Any
    model: Any  # a SessionModel; lanes need its initial_state and step
    forward: Callable[..., torch.Tensor]  # the model, compiled or wrapped for data-parallel training
    ranks: Ranks
    state: TrainState
    store: SessionStore
    device: torch.device
    sparse: bool
    global_batch: int
    local_batch: int
    report: Reporter
    run_dir: Path

    def autocast(self) -> AbstractContextManager[Any]: ...
    def loss(self, hidden: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, reduction: str = "mean") -> torch.Tensor: ...
    def update(self, loss: torch.Tensor) -> None: ...
    def limit_steps(self, n_steps: int) -> int: ...
    def check_finite(self, mean: torch.Tensor, epoch: int, step: int) -> float: ...
    def interrupt(self, epoch: int) -> None: ...


def rank_slice(order: torch.Tensor, start: int, global_batch: int, ranks: Ranks) -> torch.Tensor:
    """This rank's equal share of the global batch that starts at `start` of the order."""
    chunk = order[start : start + global_batch]
    n = len(chunk)
    return chunk[n * ranks.rank // ranks.world : n * (ranks.rank + 1) // ranks.world]


def window_epoch(trainer: Trainer, order: torch.Tensor, epoch: int, stop: StopRequest) -> tuple[float, int, int]:
    config, ranks, state = trainer.config, trainer.ranks, trainer.state
    starts = list(range(state.done, len(order), trainer.global_batch))
    starts = starts[: trainer.limit_steps(math.ceil(len(order) / trainer.global_batch)) - state.done // trainer.global_batch]
    # an interrupted epoch goes on from its figures so far (rank 0 carries the global sum), so that its loss and
    # throughput cover the whole epoch
    partial = state.partial or {}
    loss_sum = torch.tensor(float(partial.get("loss_sum", 0.0)) if ranks.main else 0.0, device=trainer.device)
    events = torch.tensor(int(partial.get("events", 0)), dtype=torch.long, device=trainer.device)
    sessions = int(partial.get("sessions", 0))
    with trainer.report.task(f"epoch {epoch + 1}/{config.epochs}", total=len(order)) as task:
        task.update(completed=state.done)
        for count, start in enumerate(starts, 1):
            index = rank_slice(order, start, trainer.global_batch, ranks)
            empty = len(index) == 0
            if empty:  # a last global batch with fewer sessions than ranks: run one masked session
                index = order[:1]
            width = int(trainer.store.lengths[index].clamp(max=config.max_length + 1).max())
            sequence = trainer.store.tail_windows(index, width)  # (B, T+1), left-padded
            inputs, targets = sequence[:, :-1], sequence[:, 1:]
            mask = (inputs != 0) & (not empty)  # (B, T): a real click, whose next click is its target
            # normalise by the events of the whole global batch (and learn whether any rank was stopped)
            shared = ranks.all_reduce(torch.stack([mask.sum(), torch.tensor(int(stop.requested), device=trainer.device)]))
            with trainer.autocast():
                hidden = trainer.forward(inputs, trainer.sparse)
                loss = trainer.loss(hidden, inputs, targets, mask, "sum") * (ranks.world / shared[0].clamp(min=1))
            trainer.update(loss)
            loss_sum += loss.detach() * shared[0] / ranks.world
            events += shared[0]
            sessions += min(trainer.global_batch, len(order) - start)
            state.done = min(start + trainer.global_batch, len(order))
            state.global_step += 1
            stopping = bool(shared[1]) if ranks.world > 1 else stop.requested
            if count % LOG_EVERY == 0 or count == len(starts) or stopping:
                mean = ranks.all_reduce(loss_sum.clone()) / events.clamp(min=1)
                task.update(completed=state.done, loss=trainer.check_finite(mean, epoch, state.global_step))
            if stopping:
                state.partial = {"loss_sum": float(ranks.all_reduce(loss_sum.clone())), "events": int(events), "sessions": sessions}
                trainer.interrupt(epoch)
    mean = ranks.all_reduce(loss_sum.clone()) / events.clamp(min=1)
    return float(mean), sessions, int(events)


def lane_epoch(trainer: Trainer, order: torch.Tensor, epoch: int, stop: StopRequest) -> tuple[float, int, int]:
    config, model = trainer.config, trainer.model
    lanes = Lanes(trainer.store, order, trainer.local_batch, config.max_length + 1)
    hidden_state = model.initial_state(trainer.local_batch, trainer.device)
    running = torch.zeros((), device=trainer.device)
    events = torch.zeros((), dtype=torch.long, device=trainer.device)
    count = 0
    total = int((trainer.store.lengths[order].clamp(max=config.max_length + 1) - 1).sum())
    limit = trainer.limit_steps(math.ceil(total / trainer.local_batch))
    with trainer.report.task(f"epoch {epoch + 1}/{config.epochs}", total=total) as task:
        while count < limit and not stop.requested and (safe := lanes.safe_steps()) > 0:
            for _ in range(min(safe, limit - count)):
                inputs, targets, active, reset = lanes.step()
                with trainer.autocast():
                    output, hidden_state = model.step(inputs, hidden_state.detach(), reset, trainer.sparse)
                    loss = trainer.loss(output.unsqueeze(1), inputs.unsqueeze(1), targets.unsqueeze(1), active.unsqueeze(1))
                trainer.update(loss)
                running += loss.detach() * active.sum()
                events += active.sum()
                count += 1
                trainer.state.global_step += 1
                if stop.requested:
                    break
            task.update(completed=int(events), loss=trainer.check_finite(running / events.clamp(min=1), epoch, count))
    if stop.requested:
        raise Interrupted(
            f"interrupted in epoch {epoch + 1}; {config.model} resumes from epoch boundaries, so the checkpoint after epoch {epoch} is kept",
            f"Resume: tron train --resume {trainer.run_dir}",
        )
    return float(running / events.clamp(min=1)), len(order), int(events)


EPOCHS: dict[str, Callable[[Trainer, torch.Tensor, int, StopRequest], tuple[float, int, int]]] = {"windows": window_epoch, "lanes": lane_epoch}
