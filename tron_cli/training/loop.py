"""One rank's training loop: a plain PyTorch loop over a device-resident train split, validated every epoch.

Each step builds the rank's batch and negatives with tensor ops on its device (`feeds.py`, `sampling.py`)
and updates the model. After each epoch: full-catalogue Recall@20 and MRR@20 on the validation split; the
best epoch by Recall@20 becomes `model.safetensors` (never chosen on test). The checkpoint after every epoch
(and on Ctrl-C or SIGTERM, mid-epoch) makes any run resumable, and resuming reproduces the uninterrupted run
exactly on CPU. With several ranks every rank runs this loop on its share of each global batch; only rank 0
writes.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tron_cli.artifacts.documents import append_jsonl
from tron_cli.artifacts.sessions import Dataset
from tron_cli.artifacts.tensors import read_tensor_header
from tron_cli.batching import SessionStore
from tron_cli.choices import DEFAULT_ORDER_WEIGHT
from tron_cli.errors import ArtifactError, Interrupted, OutputError, TrainingError, UsageError
from tron_cli.evaluation.metrics import hypervolume
from tron_cli.evaluation.procedures import EvalOptions, accumulate, first_sessions, parse_metric
from tron_cli.inference.scorer import Scorer
from tron_cli.losses import LOSSES
from tron_cli.memory import refuse_beyond
from tron_cli.modelio import EPOCH_KEY, load_weights, save_weights
from tron_cli.models import MODELS, model_section
from tron_cli.models.base import SessionModel, keep_sparse_lookups_eager
from tron_cli.reporting import SILENT, Reporter
from tron_cli.runtime import autocast_dtype, device_memory
from tron_cli.training import blending, checkpoint, schedule
from tron_cli.training.callbacks import Callback
from tron_cli.training.config import TrainConfig
from tron_cli.training.distributed import SINGLE, Ranks, average_sparse_gradients
from tron_cli.training.feeds import EPOCHS
from tron_cli.training.negatives import EventSlots, LossSpec, event_loss, full_softmax_loss
from tron_cli.training.optim import build_optimizers, dense_table_gradients
from tron_cli.training.order import bucket_by_length, epoch_order, local_seed
from tron_cli.training.sampling import ItemDistribution, Negatives, draw
from tron_cli.training.state import TrainState
from tron_cli.training.stop import StopRequest

# MultiTRON: the order weights whose validation front picks the checkpoint (its hypervolume against (0, 0))
VALIDATION_WEIGHTS = (0.0, 0.5, 1.0)
PREFERENCE_STREAM = 1  # keys the preference draws apart from any other stream seeded by (seed, step)


class Trainer:
    """Everything one rank of one run needs in memory; `fit` runs the epochs."""

    def __init__(self, config: TrainConfig, dataset: Dataset, run_dir: Path, report: Reporter = SILENT, ranks: Ranks = SINGLE):
        self.config, self.dataset, self.run_dir, self.ranks = config, dataset, run_dir, ranks
        self.report = report if ranks.main else SILENT
        self.device = ranks.device(config.device)
        self.amp = autocast_dtype(config.precision, self.device)
        self.n_items = dataset.n_items
        self.local_batch = config.batch_size_per_device or config.batch_size
        self.global_batch = self.local_batch * ranks.world
        torch.manual_seed(config.seed)  # initialisation and dropout
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)  # epoch order, batchwise negatives
        self.local_generator = torch.Generator(device=self.device).manual_seed(local_seed(config.seed, ranks.rank, 0))
        self.store = SessionStore(dataset.sessions("train"), self.device, min_length=2)
        if len(self.store) == 0:
            raise ArtifactError(f"{dataset.path}/train.parquet has no session with two clicks", "Re-run tron preprocess on more data")
        self.valid = None
        if dataset.has("valid"):
            shard = first_sessions(dataset.sessions("valid"), config.valid_limit)
            self.valid = SessionStore(shard.select(np.arange(ranks.rank, len(shard), ranks.world)), self.device, min_length=2)
        spec = MODELS.get(config.model)
        self.section = model_section(config.model, config.network, self.n_items)
        refuse_beyond_memory(spec, config, n_items=self.n_items, device=self.device)
        self.model: SessionModel = spec.build(config.network, self.n_items).to(self.device)
        # what validation ranks with: the network and the blends its options fix (scored there and everywhere after,
        # never in the loss); grids replace them with a choice on validation when training ends
        self.scorer = Scorer(self.model, blending.fixed_blends(config, dataset, self.device))
        self.blends: dict[str, Any] | None = None  # the choice and its grid, for summary.json
        self.loss_declaration = LOSSES.get(config.loss)
        self.multi = config.objective == "multitron"
        self.warned_no_orders = False
        self.needs_orders = self.loss_declaration.needs_orders
        if self.needs_orders and self.store.ordered is None:
            raise ArtifactError(f"--loss {config.loss} reads order labels, and {dataset.path} has no orders", "Train on a dataset with orders")
        # a sampled loss touches few item rows per step: their gradients are row-sparse (training/optim.py)
        self.sparse = self.loss_declaration.sampled
        self.static_shapes = config.compile or self.device.type == "cuda"
        self.forward = self._wrap(self.model)
        self.event_loss = torch.compile(event_loss) if config.compile else event_loss
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp == torch.float16 else None
        self.optimizers = build_optimizers(self.model, config, scaled=self.scaler is not None)
        self.table_buffers: dict[torch.nn.Parameter, torch.Tensor] = {}  # dense optimisers' gradient buffers of the item tables
        counts = torch.from_numpy(np.asarray(dataset.items().column("count"), dtype=np.float64))
        counts = torch.cat([torch.zeros(1, dtype=torch.float64), counts])  # (N+1,) by dense id
        self.distribution = ItemDistribution(self.n_items, counts if config.negative_distribution == "popularity" else None, config.alpha, self.device)
        self.in_batch_log_prob = torch.log((counts + 1e-12) / counts.sum()).float().to(self.device) if config.logq else None
        self.spec = LossSpec(
            loss=config.loss,
            topk=config.topk,
            mask_hits=config.mask_hits,
            options=config.loss_options,
            logq=config.logq,
            n_items=self.n_items,
            activation=self.model.activate,
        )
        self.state = TrainState()
        self.order: torch.Tensor | None = None
        self.epoch_clock = (time.perf_counter(), 0.0)  # (when the current epoch's part started, its seconds before)

    def _wrap(self, model: SessionModel):
        if self.config.compile:
            keep_sparse_lookups_eager()
        forward = torch.compile(model) if self.config.compile else model
        if self.ranks.world == 1:
            return forward
        if model.feeding != "windows":
            raise UsageError(f"{self.config.model} trains with session-parallel lanes on one device: drop --devices / torchrun")
        from torch.nn.parallel import DistributedDataParallel

        if self.sparse:  # their row-sparse gradients are averaged by average_sparse_gradients, not in DDP's dense buckets
            names = [name for name, p in model.named_parameters() if any(p is t for t in model.table_parameters())]
            # DDP matches "{module}.{param}" names, which for the root module start with a dot
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names + [f".{name}" for name in names])
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(forward, device_ids=device_ids)

    # -------------------------------------------------------------------- one step (used by feeds.py)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()

    def preference(self) -> torch.Tensor | None:
        """MultiTRON: this step's preference vector (2,) ~ Dirichlet(beta), one per step as in the reference, from a
        generator keyed by (seed, global step), so that a resumed run and every rank draw the same; else None."""
        if not self.multi:
            return None
        draw = np.random.default_rng([self.config.seed, self.state.global_step, PREFERENCE_STREAM]).dirichlet(self.config.beta)
        return torch.tensor(draw, dtype=torch.float32).to(self.device, non_blocking=True)

    def hidden(self, inputs: torch.Tensor, events: EventSlots, preference: torch.Tensor | None = None) -> torch.Tensor:
        """(E, d) states of the event slots of inputs (B, W); models that can skip padding compute only those."""
        extra = {} if preference is None else {"preference": preference}
        if self.model.forward_events:
            return self.forward(inputs, self.sparse, events.positions, **extra)
        return events.gather(self.forward(inputs, self.sparse, **extra))

    def negatives(self, inputs: torch.Tensor, events: EventSlots) -> Negatives:
        """This step's negatives for inputs (B, W) and their event slots, from the run's generators."""
        return draw(
            self.distribution,
            inputs,
            event_owner=events.owner if self.config.sampling_style == "eventwise" else None,
            n_uniform=self.config.uniform_negatives,
            n_in_batch=self.config.in_batch_negatives,
            style=self.config.sampling_style,
            reject_session_items=self.config.reject_uniform_session_items,
            reject_in_batch_items=self.config.reject_in_batch_items,
            shared=self.generator,
            local=self.local_generator,
            click_positions=events.positions,  # the batch's clicks are exactly its events
        )

    def loss(
        self,
        hidden: torch.Tensor,
        inputs: torch.Tensor,
        events: EventSlots,
        reduction: str = "mean",
        ordered: torch.Tensor | None = None,
        preference: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The step's loss: hidden (E, d) states of the event slots, inputs (B, W) dense ids, events their slots;
        MultiTRON's losses also read the events' order labels `ordered` (E,) and the step's `preference` (2,)."""
        if not self.loss_declaration.sampled:
            return full_softmax_loss(self.model, hidden, events=events, chunk=self.config.loss_options["ce_chunk"], reduction=reduction)
        negatives = self.negatives(inputs, events)
        return self.event_loss(
            self.model,
            hidden,
            events=events,
            negatives=negatives,
            spec=self.spec,
            sparse=self.sparse,
            distribution=self.distribution,
            in_batch_log_prob=self.in_batch_log_prob,
            reduction=reduction,
            ordered=ordered,
            preference=preference,
        )

    def update(self, loss: torch.Tensor) -> None:
        """One optimiser step on `loss` (row-sparse gradients of the item tables averaged across ranks, and made
        dense in place for the dense optimisers)."""
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        tables = self.model.table_parameters()
        if self.sparse and self.ranks.world > 1:
            average_sparse_gradients(tables, self.ranks)
        if self.scaler is not None:
            for optimizer in self.optimizers:
                self.scaler.unscale_(optimizer)
        dense = not self.config.optimizer.startswith("sparse")
        with dense_table_gradients(tables if dense else [], self.table_buffers):
            for optimizer in self.optimizers:
                if self.scaler is not None:
                    self.scaler.step(optimizer)
                else:
                    optimizer.step()
        if self.scaler is not None:
            self.scaler.update()

    def limit_steps(self, n_steps: int) -> int:
        limit = self.config.overfit_batches
        if limit <= 0:
            return n_steps
        return min(n_steps, int(limit) if limit >= 1 else max(1, math.ceil(limit * n_steps)))

    def _kept(self) -> str:
        return f"the checkpoint of epoch {self.state.epoch} is kept" if self.state.epoch else "no epoch finished, nothing was saved"

    def check_finite(self, mean: torch.Tensor, epoch: int, step: int) -> float:
        value = float(mean)
        if not math.isfinite(value):
            raise TrainingError(f"the loss became {value} in epoch {epoch + 1} near step {step}; {self._kept()}", "Lower --lr, or use --precision fp32")
        return value

    def _check_weights(self, epoch: int) -> None:
        """A step can leave non-finite weights behind a finite loss (an overflowing gradient): never save those."""
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise TrainingError(f"the weights became NaN or infinite in epoch {epoch + 1}; {self._kept()}", "Lower --lr, or use --precision fp32")

    def interrupt(self, epoch: int) -> None:
        self._check_weights(epoch)
        started, earlier = self.epoch_clock  # the epoch's time so far goes into the checkpoint with its loss sum
        self.state.partial = {**(self.state.partial or {}), "seconds": earlier + time.perf_counter() - started}
        self.save_checkpoint(with_order=True)
        raise Interrupted(f"interrupted in epoch {epoch + 1} after {self.state.done} sessions; checkpoint saved", f"Resume: tron train --resume {self.run_dir}")

    # -------------------------------------------------------------------- checkpoints

    def save_checkpoint(self, with_order: bool) -> None:
        """Rank 0 writes the checkpoint; every rank's local generator state goes in, for an exact resume with the same N."""
        locals_ = self.ranks.all_gather(self.local_generator.get_state().to(self.device))
        position = {**self.state.to_dict(), "world": self.ranks.world}
        if self.ranks.main:
            checkpoint.save(
                self.run_dir / "checkpoint",
                self.model,
                optimizers=self.optimizers,
                generator=self.generator,
                position=position,
                order=self.order if with_order else None,
                model_section=self.section,
                local_states=[s.cpu() for s in locals_],
                catalogue=self.catalogue,
            )
        self.ranks.barrier()

    @property
    def catalogue(self) -> str | None:
        """The fingerprint of the dataset's catalogue, recorded in every weights file this run writes."""
        return self.dataset.info.get("catalogue_sha256")

    def restore(self) -> None:
        """Continue from checkpoint/: same N restores every generator exactly; another N re-seeds the local ones."""
        position, self.order, local_states = checkpoint.load(
            self.run_dir / "checkpoint", self.model, optimizers=self.optimizers, generator=self.generator, model_section=self.section, catalogue=self.catalogue
        )
        self.state = TrainState.from_dict(position)
        self._repair_selected_weights()
        if self.order is not None:
            self.order = self.order.to(self.device)
        if position.get("world", 1) == self.ranks.world and len(local_states) == self.ranks.world:
            self.local_generator.set_state(local_states[self.ranks.rank])
        else:
            self.local_generator.manual_seed(local_seed(self.config.seed, self.ranks.rank, self.state.epoch) + self.state.done)
            self.report.warn("resuming with another number of processes: negatives differ from an uninterrupted run")

    def _repair_selected_weights(self) -> None:
        """An epoch's end writes its checkpoint before model.safetensors: when the second write failed (a full
        disk), the checkpoint names the epoch it holds as the best one while model.safetensors is older (or
        absent). The checkpoint's weights are that epoch's, so they become model.safetensors again."""
        state = self.state
        if not (self.ranks.main and state.done == 0 and state.best and state.best.get("epoch") == state.epoch and state.epoch):
            return
        selected = self.run_dir / "model.safetensors"
        recorded = read_tensor_header(selected, "run").metadata.get(EPOCH_KEY) if selected.is_file() else None
        if not selected.is_file() or (recorded is not None and recorded != str(state.epoch)):
            save_weights(self.model, selected, section=self.section, catalogue=self.catalogue, epoch=state.epoch)

    # -------------------------------------------------------------------- epochs

    @property
    def select_on(self) -> str:
        """The validation value that picks the best epoch: --select-on, or MultiTRON's hypervolume."""
        return "hypervolume" if self.multi else self.config.select_on

    def _valid_scores(self, cutoffs: tuple[int, ...]) -> dict[str, float] | None:
        """Validation metrics over every rank's sessions (order metrics too when the split has orders)."""
        assert self.valid is not None
        self.model.eval()
        accumulator = accumulate(self.scorer, self.valid, self.dataset.targets == "last", EvalOptions(cutoffs=cutoffs, exclude_seen=self.config.exclude_seen))
        self.model.train()
        parts = [accumulator.sums.sum(0, keepdim=True), accumulator.counts.sum().reshape(1, 1)]
        parts += [] if accumulator.orders is None else [accumulator.orders.sum(0, keepdim=True)]
        totals = self.ranks.all_reduce(torch.cat(parts, 1))  # (1, all): every rank's sums, one exchange
        widths = [part.shape[1] for part in parts]
        accumulator.sums, counts, *orders = totals.split(widths, 1)
        accumulator.counts = counts.reshape(1)
        accumulator.orders = orders[0] if orders else None
        values = accumulator.result()
        return None if values["n_targets"] == 0 else values

    def validate(self) -> dict[str, float] | None:
        if self.valid is None:
            return None
        if self.multi:
            return self._validate_front()
        values = self._valid_scores((20, parse_metric(self.config.select_on)[1]))
        if values is None:
            return None
        kept = {"recall@20", "mrr@20", "ndcg@20", self.config.select_on, "n_targets"}
        return {name: value for name, value in values.items() if name in kept}

    def _validate_front(self) -> dict[str, float] | None:
        """MultiTRON: click Recall@20 and order recall@20 at each of `VALIDATION_WEIGHTS`, and the hypervolume of
        those points against (0, 0) (`evaluation.metrics.hypervolume`), the value that picks the best epoch."""
        out: dict[str, float] = {}
        points = []
        for weight in VALIDATION_WEIGHTS:
            self.model.use_order_weight(weight)
            values = self._valid_scores((20,))
            if values is None:
                return None
            if values.get("n_ordered", 0) == 0 and not self.warned_no_orders:
                self.report.warn("the validation split has no ordered target: the hypervolume stays 0, and the first epoch is kept")
                self.warned_no_orders = True
            points.append((values["recall@20"], values["order_recall@20"]))
            for name in ("recall@20", "mrr@20", "order_recall@20", "order_density@20"):
                out[f"order_weight_{weight:g}/{name}"] = values[name]
            out["n_targets"] = values["n_targets"]
        self.model.use_order_weight(DEFAULT_ORDER_WEIGHT)
        return {"hypervolume": hypervolume(points), **out}

    callbacks: tuple[Callback, ...] = ()  # told of every epoch's end and of the run's end (training/callbacks.py)

    def fit(self) -> dict[str, Any]:
        config, state = self.config, self.state
        run_epoch = EPOCHS[self.model.feeding]
        select_on = self.select_on
        schedule.attach(
            self.optimizers,
            config.lr,
            schedule=config.lr_schedule,
            warmup=config.warmup_steps,
            total=config.epochs * self.steps_per_epoch(),
            global_step=lambda: self.state.global_step,
        )
        with StopRequest() as stop:
            for epoch in range(state.epoch, config.epochs):
                if self.order is None:
                    self.order = epoch_order(len(self.store), config.shuffle, self.generator)
                    if config.bucket_window:
                        self.order = bucket_by_length(
                            self.order, self.store.lengths, batch=self.global_batch, window=config.bucket_window, generator=self.generator
                        )
                    self.local_generator.manual_seed(local_seed(config.seed, self.ranks.rank, epoch))
                self.model.train()
                started = time.perf_counter()
                earlier = (state.partial or {}).get("seconds", 0.0)  # time spent on this epoch before an interrupt
                self.epoch_clock = (started, earlier)
                loss, sessions, events = run_epoch(self, self.order, epoch, stop)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - started + earlier
                self._check_weights(epoch)
                metrics = self.validate()
                record = {
                    "epoch": epoch + 1,
                    "step": state.global_step,
                    "loss": loss,
                    "valid": None if metrics is None else {k: v for k, v in metrics.items() if k != "n_targets"},
                    "sessions_per_s": sessions / seconds,
                    "events_per_s": events / seconds,
                    "seconds": seconds,
                }
                improved = metrics is None or state.best is None or metrics[select_on] > state.best[select_on]
                if improved:
                    state.best = {"epoch": epoch + 1, **(metrics or {})}
                    state.bad_epochs = 0
                else:
                    state.bad_epochs += 1
                state.epoch, state.done, state.partial = epoch + 1, 0, None
                state.history.append(record)
                self.order = None
                self._save_epoch(record, improved)
                self.report.detail(
                    f"epoch {epoch + 1}: loss {loss:.4f}"
                    + ("" if metrics is None else ", valid " + " ".join(f"{name} {metrics[name]:.4f}" for name in self._shown(metrics)))
                )
                stop_asked = [callback.epoch_end(record) for callback in self.callbacks]
                if config.early_stopping and state.bad_epochs >= config.early_stopping:
                    self.report.info(f"early stopping: no better validation {select_on} for {config.early_stopping} epochs")
                    break
                if any(stop_asked):
                    break
                if stop.requested and epoch + 1 < config.epochs:  # Ctrl-C during validation or the epoch's writes
                    raise Interrupted(f"interrupted after epoch {epoch + 1}; checkpoint saved", f"Resume: tron train --resume {self.run_dir}")
        if blending.has_grid(config):
            self.choose_blends()
        summary = self.summary()
        for callback in self.callbacks:
            callback.finish(summary)
        return summary

    def choose_blends(self) -> None:
        """The main rank scores the grids' combinations on the whole validation split with the selected epoch's
        weights (the others wait), and the best becomes the run's scorer (`blending.choose`)."""
        if self.ranks.main:
            if self.valid is None:
                self.report.warn("no validation split: the blends keep the weights their options fix, and the grids are not used")
            else:
                selected = self.run_dir / "model.safetensors"
                load_weights(self.model, selected, "run")  # the selected epoch, not the last one
                self.model.eval()
                self.scorer, self.blends = blending.choose(self.model, self.config, self.dataset, self.device, report=self.report)
                chosen = self.blends["chosen"]
                self.report.detail(f"blends chosen on validation: {chosen}, valid {self.blends['valid']}")
        self.ranks.barrier()

    def _shown(self, metrics: dict[str, float]) -> list[str]:
        return ["hypervolume", "order_weight_0/recall@20", "order_weight_1/order_recall@20"] if self.multi else ["recall@20", "mrr@20"]

    def _save_epoch(self, record: dict[str, Any], improved: bool) -> None:
        """The epoch's writes, each atomic, in the order that leaves a resumable run dir wherever one fails (a full
        disk): the checkpoint, then model.safetensors when the epoch is the best so far (`restore` repairs a
        failure between the two), then its history line (`restore` rewrites the history from the checkpoint)."""
        epoch = self.state.epoch
        kept = epoch - 1
        try:
            self.save_checkpoint(with_order=False)
            kept = epoch
            if self.ranks.main:
                if improved:
                    save_weights(self.model, self.run_dir / "model.safetensors", section=self.section, catalogue=self.catalogue, epoch=epoch)
                append_jsonl(self.run_dir / "history.jsonl", record)
        except OutputError as error:
            saved = f"the checkpoint of epoch {kept} is kept" if kept else "no epoch was saved"
            raise OutputError(
                f"training stopped after epoch {epoch}: {error.message}; {saved}", f"Once it can be written, resume: tron train --resume {self.run_dir}"
            ) from None

    def steps_per_epoch(self) -> int:
        """Optimiser steps in one epoch: global batches of sessions, or lane steps of clicks (an estimate: lanes
        finish unevenly)."""
        if self.model.feeding == "windows":
            return self.limit_steps(math.ceil(len(self.store) / self.global_batch))
        targets = int((self.store.lengths.clamp(max=self.config.max_length + 1) - 1).sum())
        return self.limit_steps(math.ceil(targets / self.local_batch))

    def summary(self) -> dict[str, Any]:
        history = self.state.history
        best = self.state.best or {}
        seconds = sum(r["seconds"] for r in history)
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else str(self.device)
        return {
            "run": str(self.run_dir),
            "epochs": len(history),
            "best_epoch": best.get("epoch"),
            "selected_by": f"valid {self.select_on}" if self.valid is not None else "last epoch (no validation split)",
            "valid": {k: v for k, v in best.items() if k not in ("epoch", "n_targets")} or None,
            "loss": history[-1]["loss"] if history else None,
            "sessions_per_s": sum(r["sessions_per_s"] * r["seconds"] for r in history) / seconds if seconds else None,
            "events_per_s": sum(r["events_per_s"] * r["seconds"] for r in history) / seconds if seconds else None,
            "train_seconds": seconds,
            "device": device if self.ranks.world == 1 else f"{self.ranks.world} x {device}",
            **({"blends": self.blends} if self.blends is not None else {}),
        }


def refuse_beyond_memory(spec: Any, config: TrainConfig, n_items: int, device: torch.device) -> None:
    """Refuse settings whose model cannot be trained on `device` before any of it is allocated: the network is
    built on the meta device (shapes only), and training holds its weights, their gradients and two optimiser
    moments, four times the weights."""
    try:
        with torch.device("meta"):
            probe = spec.build(config.network, n_items)
        weights = sum(p.numel() * p.element_size() for p in probe.parameters())
    except RuntimeError:  # the sizes overflow even a meta tensor's storage
        weights = float("inf")
    settings = ", ".join(
        f"--{name.replace('_', '-')} {value}" for name, value in vars(config.network).items() if isinstance(value, int) and not isinstance(value, bool)
    )
    refuse_beyond(
        f"training {config.model} ({settings}) over {n_items:,} items",
        needed=4 * weights,
        available=device_memory(device),
        where=f"the {device.type} device" if device.type != "cpu" else "this machine",
        hint="Choose smaller settings (--hidden-size, --num-layers)",
    )
