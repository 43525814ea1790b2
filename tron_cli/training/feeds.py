"""How one epoch feeds a model, by the model's declared `feeding`.

- `windows` (SASRec): each step takes the next global batch of the epoch's order, the last max_length + 1
  clicks of each session left-padded, and every real position predicts the next click. Data-parallel ranks
  take equal shares of each global batch; the loss is normalised by the events of the whole global batch.
  An epoch can stop after any step and resume there (`TrainState.done`). The width and the number of
  events of every batch are read from the device once per epoch (`batch_shapes`), so that a step never
  waits for the device: with static shapes (CUDA, --compile) both are rounded up to a few buckets.
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
from tron_cli.errors import Interrupted
from tron_cli.reporting import Reporter
from tron_cli.training.distributed import Ranks
from tron_cli.training.negatives import EventSlots
from tron_cli.training.state import TrainState
from tron_cli.training.stop import StopRequest

LOG_EVERY = 20  # steps between device syncs for the progress bar and the NaN check


class Trainer(Protocol):
    """What an epoch needs of the loop (`training.loop.Trainer`)."""

    config: Any
    model: Any  # a SessionModel; lanes need its initial_state and step
    ranks: Ranks
    state: TrainState
    store: SessionStore
    device: torch.device
    sparse: bool
    static_shapes: bool  # round batch widths and event counts up to buckets (compiled or captured steps)
    global_batch: int
    local_batch: int
    report: Reporter
    run_dir: Path

    def autocast(self) -> AbstractContextManager[Any]: ...

    needs_orders: bool

    def preference(self) -> torch.Tensor | None: ...
    def hidden(self, inputs: torch.Tensor, events: EventSlots, preference: torch.Tensor | None = None) -> torch.Tensor: ...
    def loss(
        self,
        hidden: torch.Tensor,
        inputs: torch.Tensor,
        events: EventSlots,
        reduction: str = "mean",
        ordered: torch.Tensor | None = None,
        preference: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def update(self, loss: torch.Tensor) -> None: ...
    def limit_steps(self, n_steps: int) -> int: ...
    def check_finite(self, mean: torch.Tensor, epoch: int, step: int) -> float: ...
    def interrupt(self, epoch: int) -> None: ...


def rank_slice(order: torch.Tensor, start: int, global_batch: int, ranks: Ranks) -> torch.Tensor:
    """This rank's equal share of the global batch that starts at `start` of the order."""
    chunk = order[start : start + global_batch]
    n = len(chunk)
    return chunk[n * ranks.rank // ranks.world : n * (ranks.rank + 1) // ranks.world]


def bucket(n: int) -> int:
    """n rounded up to a multiple of 1/8 of its power of two (at least 8): few distinct sizes, under 1/8 waste."""
    step = max(8, 1 << max(n.bit_length() - 4, 0))
    return -(-n // step) * step


def batch_shapes(store: SessionStore, order: torch.Tensor, window: int, global_batch: int, ranks: Ranks, steps: range) -> list[tuple[int, int]]:
    """(window width, target events) of this rank's share of the global batches `steps` of the epoch's order,
    read from the device at once (one sync per epoch instead of one per step). Width 0: an empty share."""
    n = len(order)
    clicks = store.lengths[order].clamp(max=window)  # (S,) clicks of each session's window
    position = torch.arange(n, device=order.device)
    step = position // global_batch
    within = position - step * global_batch
    size = (n - step * global_batch).clamp(max=global_batch)  # sessions in the global batch (the last may be short)
    mine = (within >= size * ranks.rank // ranks.world) & (within < size * (ranks.rank + 1) // ranks.world)  # as rank_slice
    n_steps = -(-n // global_batch)
    width = torch.zeros(n_steps, dtype=torch.long, device=order.device).scatter_reduce_(0, step, torch.where(mine, clicks, 0), "amax")
    events = torch.zeros(n_steps, dtype=torch.long, device=order.device).index_add_(0, step, torch.where(mine, clicks - 1, 0))
    return [(w, e) for w, e in torch.stack([width, events], 1)[steps.start : steps.stop].tolist()]


def window_step(
    trainer: Trainer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    slots: int,
    normaliser: torch.Tensor,
    ordered: torch.Tensor | None = None,
) -> torch.Tensor:
    """One optimiser step on a (B, W) batch of windows whose `mask` holds at most `slots` events; the loss is
    the sum over them divided by `normaliser` / world (the events of the global batch). Returns it, detached.
    `ordered` (B, W): the order labels of the targets, for losses that read them. With MultiTRON the step's
    preference vector is drawn first. Nothing here waits for the device."""
    events = EventSlots.select(mask, targets, slots)
    preference = trainer.preference()
    with trainer.autocast():
        hidden = trainer.hidden(inputs, events, preference)
        labels = None if ordered is None else events.gather(ordered)
        loss = trainer.loss(hidden, inputs, events=events, reduction="sum", ordered=labels, preference=preference) * (
            trainer.ranks.world / normaliser.clamp(min=1)
        )
    trainer.update(loss)
    return loss.detach()


def window_epoch(trainer: Trainer, order: torch.Tensor, epoch: int, stop: StopRequest) -> tuple[float, int, int]:
    config, ranks, state = trainer.config, trainer.ranks, trainer.state
    first = state.done // trainer.global_batch
    steps = range(first, trainer.limit_steps(math.ceil(len(order) / trainer.global_batch)))
    shapes = batch_shapes(trainer.store, order, window=config.max_length + 1, global_batch=trainer.global_batch, ranks=ranks, steps=steps)
    # an interrupted epoch goes on from its figures so far (rank 0 carries the global sum), so that its loss and
    # throughput cover the whole epoch
    partial = state.partial or {}
    loss_sum = torch.tensor(float(partial.get("loss_sum", 0.0)) if ranks.main else 0.0, device=trainer.device)
    events = torch.tensor(int(partial.get("events", 0)), dtype=torch.long, device=trainer.device)
    sessions = int(partial.get("sessions", 0))
    with trainer.report.task(f"epoch {epoch + 1}/{config.epochs}", total=len(order)) as task:
        task.update(completed=state.done)
        for count, (step, (width, n_events)) in enumerate(zip(steps, shapes), 1):
            start = step * trainer.global_batch
            index = rank_slice(order, start, trainer.global_batch, ranks)
            if width == 0:  # a last global batch with fewer sessions than ranks: run one masked session
                index, width = order[:1], 2
            if trainer.static_shapes:
                width, n_events = min(bucket(width), config.max_length + 1), bucket(n_events)
            sequence = trainer.store.tail_windows(index, width)  # (B, W+1), left-padded
            inputs, targets = sequence[:, :-1], sequence[:, 1:]
            ordered = trainer.store.tail_labels(index, width)[:, 1:] if trainer.needs_orders else None  # (B, W) of the targets
            mask = inputs != 0  # (B, W): a real click, whose next click is its target
            if n_events == 0:
                mask = torch.zeros_like(mask)
            total = mask.sum()
            logging = count % LOG_EVERY == 0 or count == len(steps)
            stopping = stop.requested
            if ranks.world > 1:  # normalise by the events of the whole global batch; every rank stops at the same step
                shared = ranks.all_reduce(torch.stack([total, torch.tensor(int(stop.requested), device=trainer.device)]))
                total, stopping = shared[0], logging and bool(shared[1])  # whether any rank was stopped, read when logging
            loss = window_step(trainer, inputs, targets=targets, mask=mask, slots=n_events, normaliser=total, ordered=ordered)
            loss_sum += loss * total / ranks.world
            events += total
            sessions += min(trainer.global_batch, len(order) - start)
            state.done = min(start + trainer.global_batch, len(order))
            state.global_step += 1
            if logging or stopping:
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
                slots = EventSlots.select(active.unsqueeze(1), targets.unsqueeze(1), trainer.local_batch)  # every lane a slot
                with trainer.autocast():
                    output, hidden_state = model.step(inputs, hidden_state.detach(), reset, trainer.sparse)
                    loss = trainer.loss(slots.gather(output.unsqueeze(1)), inputs.unsqueeze(1), slots)
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
