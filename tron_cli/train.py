"""The train stage: a plain PyTorch loop over a device-resident train split, validated every epoch.

Each step takes the next global batch of the epoch's order, builds the rank's windows and negatives with
tensor ops on its device, and updates the model. After each epoch: full-catalogue Recall@20 and MRR@20 on
the validation split; the best epoch by Recall@20 becomes `model.safetensors` (never chosen on test). The
checkpoint after every epoch (and on Ctrl-C or SIGTERM, mid-epoch) makes any run resumable with `--resume`,
and resuming reproduces the uninterrupted run exactly on CPU. With several ranks (distributed.py) every rank
runs this loop on its share of each global batch; only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import shutil
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from tron_cli import artifacts, checkpoint, home
from tron_cli.artifacts import Dataset
from tron_cli.batching import Lanes, SessionStore
from tron_cli.config import TrainConfig, validate
from tron_cli.distributed import SINGLE, Ranks, from_environment, average_sparse_gradients
from tron_cli.errors import ArtifactError, Interrupted, TrainingError, UsageError
from tron_cli.evaluate import EvalOptions, first_sessions, accumulate
from tron_cli.modelio import build_model, model_section, save_weights
from tron_cli.objective import LossSpec, full_softmax_loss, sampled_loss
from tron_cli.reporting import SILENT, Reporter
from tron_cli.runtime import autocast_dtype
from tron_cli.sampling import ItemDistribution, draw

LOG_EVERY = 20  # steps between device syncs for the progress bar and the NaN check
SELECT_ON = "recall@20"
RESUMABLE_OVERRIDES = {"epochs", "device", "early_stopping", "valid_limit", "precision", "compile"}


@dataclass
class TrainRequest:
    config: TrainConfig
    data: Path | None = None
    out: Path | None = None
    resume: Path | None = None
    force: bool = False
    reference_config: dict[str, Any] | None = None
    overrides: tuple[str, ...] = ()  # options given explicitly (only some may change on --resume)


# ------------------------------------------------------------------------------------------------ run dir


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run dir: a second `tron train` on it fails at once (the kernel frees it on kill)."""
    fresh = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise TrainingError(f"{run_dir} is being written by another tron train", "Wait for it, or train into another --out") from None
    try:
        yield
    except BaseException:
        if fresh and [p.name for p in run_dir.iterdir()] == [".lock"]:  # failed before writing anything: leave no empty run dir
            (run_dir / ".lock").unlink()
            run_dir.rmdir()
        raise
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


class StopRequest:
    """Ctrl-C / SIGTERM set a flag that the loop checks after each step; a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------------------------ building blocks


def model_for(config: TrainConfig, n_items: int) -> dict[str, Any]:
    """The `model` section of config.json for `config`."""
    from tron_cli.models.gru4rec import GRU4RecConfig
    from tron_cli.models.sasrec import SASRecConfig

    if config.model == "gru4rec":
        return model_section("gru4rec", GRU4RecConfig(n_items, config.hidden_size, config.num_layers, config.dropout, config.share_embeddings, config.output_bias, config.original_gru))
    return model_section(
        "sasrec",
        SASRecConfig(n_items, config.hidden_size, config.num_layers, config.num_heads, config.dropout, config.max_length, config.share_embeddings, config.output_bias, config.positions),
    )


def build_optimizers(model: torch.nn.Module, config: TrainConfig) -> list[torch.optim.Optimizer]:
    """Dense Adam/Adagrad over everything, or a row-sparse optimiser for the item tables + the dense one for the rest."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    dense_class = torch.optim.Adagrad if config.optimizer.endswith("adagrad") else torch.optim.Adam
    if not config.optimizer.startswith("sparse"):
        return [dense_class(trainable, lr=config.lr)]
    tables = {id(p) for p in model.table_parameters()}
    sparse_params = [p for p in trainable if id(p) in tables]
    dense_params = [p for p in trainable if id(p) not in tables]
    sparse = torch.optim.SparseAdam(sparse_params, lr=config.lr) if config.optimizer == "sparse-adam" else torch.optim.Adagrad(sparse_params, lr=config.lr, foreach=False)
    return [sparse, dense_class(dense_params, lr=config.lr)]


def epoch_order(n: int, shuffle: str, generator: torch.Generator) -> torch.Tensor:
    device = generator.device
    if shuffle == "shuffle_without_replacement":
        return torch.randperm(n, generator=generator, device=device)
    if shuffle == "shuffle_with_replacement":
        return torch.randint(0, n, (n,), generator=generator, device=device)
    return torch.arange(n, device=device)


def bucket_by_length(order: torch.Tensor, lengths: torch.Tensor, batch: int, window: int, generator: torch.Generator) -> torch.Tensor:
    """Within each window of `window` batches of `order`, group sessions of similar length into the same batch
    and shuffle those batches: a batch is then only as wide as its sessions, not as the longest of a random
    mix (short-session data wastes most of a padded batch). The window keeps the order's coarse structure."""
    span = batch * window
    out = order.clone()
    for start in range(0, len(order), span):
        part = order[start : start + span]
        part = part[torch.argsort(lengths[part], stable=True)]
        n_batches = -(-len(part) // batch)
        batches = torch.randperm(n_batches, generator=generator, device=order.device)
        position = (batches[:, None] * batch + torch.arange(batch, device=order.device)).reshape(-1)
        out[start : start + len(part)] = part[position[position < len(part)]]
    return out


def local_seed(seed: int, rank: int, epoch: int) -> int:
    """Seed of a rank's local generator in an epoch: fixed by (seed, rank, epoch), whatever ran before."""
    return (seed * 1_000_003 + (rank + 1) * 7_919 + epoch * 104_729) % (2**63)


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
        self.section = model_for(config, self.n_items)
        self.model = build_model(self.section).to(self.device)
        self.sparse = config.optimizer.startswith("sparse")
        self.forward = self._wrap(self.model)
        self.optimizers = build_optimizers(self.model, config)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp == torch.float16 else None
        counts = torch.from_numpy(np.asarray(dataset.items().column("count"), dtype=np.float64))
        counts = torch.cat([torch.zeros(1, dtype=torch.float64), counts])  # (N+1,) by dense id
        self.distribution = ItemDistribution(self.n_items, counts if config.negative_distribution == "popularity" else None, config.alpha, self.device)
        self.in_batch_log_prob = torch.log((counts + 1e-12) / counts.sum()).float().to(self.device) if config.logq else None
        self.spec = LossSpec(config.loss, config.topk, config.mask_hits, config.bpr_penalty, config.gbce_t, config.logq, config.final_activation, self.n_items)
        # `done`: sessions of this epoch's order already trained on (global), so resuming works with any N
        self.position: dict[str, Any] = {"epoch": 0, "done": 0, "global_step": 0, "best": None, "bad_epochs": 0, "history": []}
        self.order: torch.Tensor | None = None

    def _wrap(self, model: torch.nn.Module):
        forward = torch.compile(model) if self.config.compile else model
        if self.ranks.world == 1:
            return forward
        if self.config.model == "gru4rec":
            raise UsageError("gru4rec trains with session-parallel lanes on one device: drop --devices / torchrun")
        from torch.nn.parallel import DistributedDataParallel

        if self.sparse:  # their row-sparse gradients are averaged by average_sparse_gradients, not in DDP's dense buckets
            names = [name for name, p in model.named_parameters() if any(p is t for t in model.table_parameters())]
            # DDP matches "{module}.{param}" names, which for the root module start with a dot
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names + [f".{name}" for name in names])
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(forward, device_ids=device_ids)

    # -------------------------------------------------------------------- one step

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()

    def _loss(self, hidden, inputs, targets, mask, reduction: str = "mean") -> torch.Tensor:
        if self.config.loss == "ce":
            return full_softmax_loss(self.model, hidden, mask, targets, self.config.ce_chunk, reduction)
        owner = mask.reshape(-1).nonzero().squeeze(1) // mask.shape[1] if self.config.sampling_style == "eventwise" else None
        negatives = draw(
            self.distribution,
            inputs,
            owner,
            self.config.uniform_negatives,
            self.config.in_batch_negatives,
            self.config.sampling_style,
            self.config.reject_uniform_session_items,
            self.config.reject_in_batch_items,
            self.generator,
            self.local_generator,
        )
        return sampled_loss(self.model, hidden, mask, targets, negatives, self.spec, self.sparse, self.distribution, self.in_batch_log_prob, reduction)

    def _update(self, loss: torch.Tensor) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if self.sparse and self.ranks.world > 1:
            average_sparse_gradients(self.model.table_parameters(), self.ranks)
        for optimizer in self.optimizers:
            if self.scaler is not None:
                self.scaler.step(optimizer)
            else:
                optimizer.step()
        if self.scaler is not None:
            self.scaler.update()

    def _rank_slice(self, start: int) -> torch.Tensor:
        """This rank's equal share of the global batch that starts at `start` of the order."""
        chunk = self.order[start : start + self.global_batch]
        n = len(chunk)
        return chunk[n * self.ranks.rank // self.ranks.world : n * (self.ranks.rank + 1) // self.ranks.world]

    # -------------------------------------------------------------------- epochs

    def _sasrec_epoch(self, epoch: int, stop: StopRequest) -> tuple[float, int, int]:
        """Train one epoch from self.position['done']; returns (mean loss per event, sessions, target events)."""
        config, ranks = self.config, self.ranks
        starts = list(range(self.position["done"], len(self.order), self.global_batch))
        starts = starts[: self._limit_steps(math.ceil(len(self.order) / self.global_batch)) - self.position["done"] // self.global_batch]
        loss_sum = torch.zeros((), device=self.device)
        events = torch.zeros((), dtype=torch.long, device=self.device)
        sessions = 0
        with self.report.task(f"epoch {epoch + 1}/{config.epochs}", total=len(self.order)) as task:
            task.update(completed=self.position["done"])
            for count, start in enumerate(starts, 1):
                index = self._rank_slice(start)
                empty = len(index) == 0
                if empty:  # a last global batch with fewer sessions than ranks: run one masked session
                    index = self.order[:1]
                width = int(self.store.lengths[index].clamp(max=config.max_length + 1).max())
                sequence = self.store.tail_windows(index, width)  # (B, T+1), left-padded
                inputs, targets = sequence[:, :-1], sequence[:, 1:]
                mask = (inputs != 0) & (not empty)  # (B, T): a real click, whose next click is its target
                # normalise by the events of the whole global batch (and learn whether any rank was stopped)
                shared = ranks.all_reduce(torch.stack([mask.sum(), torch.tensor(int(stop.requested), device=self.device)]))
                with self._autocast():
                    hidden = self.forward(inputs, self.sparse)
                    loss = self._loss(hidden, inputs, targets, mask, "sum") * (ranks.world / shared[0].clamp(min=1))
                self._update(loss)
                loss_sum += loss.detach() * shared[0] / ranks.world
                events += shared[0]
                sessions += min(self.global_batch, len(self.order) - start)
                self.position["done"] = min(start + self.global_batch, len(self.order))
                self.position["global_step"] += 1
                stopping = bool(shared[1]) if ranks.world > 1 else stop.requested
                if count % LOG_EVERY == 0 or count == len(starts) or stopping:
                    mean = ranks.all_reduce(loss_sum.clone()) / events.clamp(min=1)
                    task.update(completed=self.position["done"], loss=self._check_finite(mean, epoch, self.position["global_step"]))
                if stopping:
                    self._interrupt(epoch)
        mean = ranks.all_reduce(loss_sum.clone()) / events.clamp(min=1)
        return float(mean), sessions, int(events)

    def _gru_epoch(self, epoch: int, stop: StopRequest) -> tuple[float, int, int]:
        """GRU4Rec: session-parallel lanes, one click per lane per step, no backpropagation through time."""
        config = self.config
        lanes = Lanes(self.store, self.order, self.local_batch, config.max_length + 1)
        state = self.model.initial_state(self.local_batch, self.device)
        running = torch.zeros((), device=self.device)
        events = torch.zeros((), dtype=torch.long, device=self.device)
        count = 0
        total = int((self.store.lengths[self.order].clamp(max=config.max_length + 1) - 1).sum())
        limit = self._limit_steps(math.ceil(total / self.local_batch))
        with self.report.task(f"epoch {epoch + 1}/{config.epochs}", total=total) as task:
            while count < limit and not stop.requested and (safe := lanes.safe_steps()) > 0:
                for _ in range(min(safe, limit - count)):
                    inputs, targets, active, reset = lanes.step()
                    with self._autocast():
                        output, state = self.model.step(inputs, state.detach(), reset, self.sparse)
                        loss = self._loss(output.unsqueeze(1), inputs.unsqueeze(1), targets.unsqueeze(1), active.unsqueeze(1))
                    self._update(loss)
                    running += loss.detach() * active.sum()
                    events += active.sum()
                    count += 1
                    self.position["global_step"] += 1
                    if stop.requested:
                        break
                task.update(completed=int(events), loss=self._check_finite(running / events.clamp(min=1), epoch, count))
        if stop.requested:
            raise Interrupted(
                f"interrupted in epoch {epoch + 1}; GRU4Rec resumes from epoch boundaries, so the checkpoint after epoch {epoch} is kept",
                f"Resume: tron train --resume {self.run_dir}",
            )
        return float(running / events.clamp(min=1)), len(self.order), int(events)

    def _limit_steps(self, n_steps: int) -> int:
        limit = self.config.overfit_batches
        if limit <= 0:
            return n_steps
        return min(n_steps, int(limit) if limit >= 1 else max(1, math.ceil(limit * n_steps)))

    def _check_finite(self, mean: torch.Tensor, epoch: int, step: int) -> float:
        value = float(mean)
        if not math.isfinite(value):
            kept = f"the checkpoint of epoch {self.position['epoch']} is kept" if self.position["epoch"] else "no epoch finished, nothing was saved"
            raise TrainingError(f"the loss became {value} in epoch {epoch + 1} near step {step}; {kept}", "Lower --lr, or use --precision fp32")
        return value

    def _check_weights(self, epoch: int) -> None:
        """A step can leave non-finite weights behind a finite loss (an overflowing gradient): never save those."""
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            kept = f"the checkpoint of epoch {self.position['epoch']} is kept" if self.position["epoch"] else "no epoch finished, nothing was saved"
            raise TrainingError(f"the weights became NaN or infinite in epoch {epoch + 1}; {kept}", "Lower --lr, or use --precision fp32")

    def _interrupt(self, epoch: int) -> None:
        self._check_weights(epoch)
        self.save_checkpoint(with_order=True)
        raise Interrupted(f"interrupted in epoch {epoch + 1} after {self.position['done']} sessions; checkpoint saved", f"Resume: tron train --resume {self.run_dir}")

    def save_checkpoint(self, with_order: bool) -> None:
        """Rank 0 writes the checkpoint; every rank's local generator state goes in, for an exact resume with the same N."""
        locals_ = self.ranks.all_gather(self.local_generator.get_state().to(self.device))
        position = {**self.position, "world": self.ranks.world}
        if self.ranks.main:
            checkpoint.save(self.run_dir / "checkpoint", self.model, self.optimizers, self.generator, position, self.order if with_order else None, self.section, [s.cpu() for s in locals_])
        self.ranks.barrier()

    def restore(self) -> None:
        """Continue from checkpoint/: same N restores every generator exactly; another N re-seeds the local ones."""
        self.position, self.order, local_states = checkpoint.load(self.run_dir / "checkpoint", self.model, self.optimizers, self.generator)
        if self.order is not None:
            self.order = self.order.to(self.device)
        if self.position.pop("world", 1) == self.ranks.world and len(local_states) == self.ranks.world:
            self.local_generator.set_state(local_states[self.ranks.rank])
        else:
            self.local_generator.manual_seed(local_seed(self.config.seed, self.ranks.rank, self.position["epoch"]) + self.position["done"])
            self.report.warn("resuming with another number of processes: negatives differ from an uninterrupted run")

    def validate(self) -> dict[str, float] | None:
        if self.valid is None:
            return None
        self.model.eval()
        accumulator = accumulate(self.model, self.valid, self.n_items, self.dataset.targets == "last", EvalOptions(cutoffs=(20,)))
        self.model.train()
        totals = self.ranks.all_reduce(torch.cat([accumulator.sums.sum(0), accumulator.counts.sum()[None]]))
        if float(totals[-1]) == 0:
            return None
        values = dict(zip(accumulator.names, (totals[:-1] / totals[-1]).tolist()))
        return {"recall@20": values["recall@20"], "mrr@20": values["mrr@20"], "ndcg@20": values["ndcg@20"], "n_targets": int(totals[-1])}

    def fit(self) -> dict[str, Any]:
        config = self.config
        with StopRequest() as stop:
            for epoch in range(self.position["epoch"], config.epochs):
                if self.order is None:
                    self.order = epoch_order(len(self.store), config.shuffle, self.generator)
                    if config.bucket_window:
                        self.order = bucket_by_length(self.order, self.store.lengths, self.global_batch, config.bucket_window, self.generator)
                    self.local_generator.manual_seed(local_seed(config.seed, self.ranks.rank, epoch))
                self.model.train()
                started = time.perf_counter()
                run_epoch = self._gru_epoch if config.model == "gru4rec" else self._sasrec_epoch
                loss, sessions, events = run_epoch(epoch, stop)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - started
                self._check_weights(epoch)
                metrics = self.validate()
                record = {
                    "epoch": epoch + 1,
                    "step": self.position["global_step"],
                    "loss": loss,
                    "valid": None if metrics is None else {k: v for k, v in metrics.items() if k != "n_targets"},
                    "sessions_per_s": sessions / seconds,
                    "events_per_s": events / seconds,
                    "seconds": seconds,
                }
                improved = metrics is None or self.position["best"] is None or metrics[SELECT_ON] > self.position["best"][SELECT_ON]
                if improved and self.ranks.main:
                    save_weights(self.model, self.run_dir / "model.safetensors", self.section)
                if improved:
                    self.position["best"] = {"epoch": epoch + 1, **(metrics or {})}
                    self.position["bad_epochs"] = 0
                else:
                    self.position["bad_epochs"] += 1
                self.position.update(epoch=epoch + 1, done=0)
                self.position["history"].append(record)
                self.order = None
                self.save_checkpoint(with_order=False)
                if self.ranks.main:
                    artifacts.append_jsonl(self.run_dir / "history.jsonl", record)
                self.report.detail(f"epoch {epoch + 1}: loss {loss:.4f}" + ("" if metrics is None else f", valid recall@20 {metrics['recall@20']:.4f} mrr@20 {metrics['mrr@20']:.4f}"))
                if config.early_stopping and self.position["bad_epochs"] >= config.early_stopping:
                    self.report.info(f"early stopping: no better validation {SELECT_ON} for {config.early_stopping} epochs")
                    break
        return self._summary()

    def _summary(self) -> dict[str, Any]:
        history = self.position["history"]
        best = self.position["best"] or {}
        seconds = sum(r["seconds"] for r in history)
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else str(self.device)
        return {
            "run": str(self.run_dir),
            "epochs": len(history),
            "best_epoch": best.get("epoch"),
            "selected_by": f"valid {SELECT_ON}" if self.valid is not None else "last epoch (no validation split)",
            "valid": {k: v for k, v in best.items() if k not in ("epoch", "n_targets")} or None,
            "loss": history[-1]["loss"] if history else None,
            "sessions_per_s": sum(r["sessions_per_s"] * r["seconds"] for r in history) / seconds if seconds else None,
            "events_per_s": sum(r["events_per_s"] * r["seconds"] for r in history) / seconds if seconds else None,
            "train_seconds": seconds,
            "device": device if self.ranks.world == 1 else f"{self.ranks.world} x {device}",
        }


# ------------------------------------------------------------------------------------------------ the stage


def _dataset_record(dataset: Dataset) -> dict[str, Any]:
    return {"path": str(dataset.path.resolve()), "name": dataset.name, "n_items": dataset.n_items, "catalogue_sha256": dataset.info.get("catalogue_sha256")}


def _resume_config(request: TrainRequest, document: dict[str, Any]) -> TrainConfig:
    changed = sorted(set(request.overrides) - RESUMABLE_OVERRIDES)
    if changed:
        raise UsageError(f"--{changed[0].replace('_', '-')} cannot change when resuming", f"Only {', '.join(sorted(RESUMABLE_OVERRIDES))} can; start a new run for the rest")
    stored = TrainConfig(**document["train"])
    return validate(replace(stored, **{name: getattr(request.config, name) for name in request.overrides}))


def prepare_run_dir(request: TrainRequest, check: bool = True) -> Path:
    """The run dir this request trains into, after checking (with `check`) it may be (re)written; creates nothing."""
    if request.resume is not None:
        return Path(request.resume)
    if request.out:
        run_dir = Path(request.out)
    else:
        dataset = artifacts.read_dataset(Path(request.data) if request.data else home.latest_dataset())
        run_dir = home.new_run_dir(f"{dataset.name}-{request.config.model}")
    if check and run_dir.exists() and any(p.name != ".lock" for p in run_dir.iterdir()) and not request.force:
        raise UsageError(f"{run_dir} exists already", "Pass --force to replace it, --resume to continue it, or another --out")
    return run_dir


def train(request: TrainRequest, report: Reporter = SILENT) -> dict[str, Any]:
    """Run the stage (one rank of it under torchrun or --devices); returns the summary, also in summary.json."""
    ranks = from_environment(request.config.device)
    # rank 0 checks and names the run dir; the others must be told it (--out, or --resume)
    run_dir = prepare_run_dir(request, check=ranks.main) if ranks.main or request.resume is not None or request.out else None
    if request.resume is not None:
        document = artifacts.read_json(run_dir / "config.json", "run")
        config = _resume_config(request, document)
        dataset = artifacts.read_dataset(Path(document["dataset"]["path"]))
        if dataset.info.get("catalogue_sha256") != document["dataset"].get("catalogue_sha256"):
            raise ArtifactError(f"the dataset of {run_dir} changed since training started ({dataset.path})", "Start a new run")
    else:
        config = request.config
        dataset = artifacts.read_dataset(Path(request.data) if request.data else home.latest_dataset())
        if run_dir is None:
            raise UsageError("with torchrun, give every rank the run dir: --out DIR")
    validate(config, dataset.n_items)
    lock = run_lock(run_dir) if ranks.main else contextlib.nullcontext()
    with lock:
        trainer = Trainer(config, dataset, run_dir, report, ranks)
        if request.resume is not None:  # before the run dir changes: a failed resume leaves a finished run finished
            if not (run_dir / "checkpoint" / "state.json").is_file():
                raise ArtifactError(f"{run_dir} has no checkpoint to resume from", "Start it again without --resume")
            trainer.restore()
        if ranks.main:
            _start_run_dir(request, run_dir, trainer, dataset, config)
            if request.resume is not None:
                _rewrite_history(run_dir, trainer.position["history"])
        ranks.barrier()
        summary = trainer.fit()
        if ranks.main:
            artifacts.write_json(run_dir / "summary.json", summary, kind="summary")
        ranks.barrier()
    return summary


def _start_run_dir(request: TrainRequest, run_dir: Path, trainer: Trainer, dataset: Dataset, config: TrainConfig) -> None:
    """A new run: an empty dir with config.json. A resumed one: config.json updated, summary.json removed."""
    if request.resume is not None:
        document = artifacts.read_json(run_dir / "config.json", "run")
        (run_dir / "summary.json").unlink(missing_ok=True)
        document["train"] = config.to_dict()
        artifacts.write_json(run_dir / "config.json", {k: v for k, v in document.items() if k not in ("schema", "tron_version")}, kind="run")
        return
    for entry in run_dir.iterdir():
        if entry.name != ".lock":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    artifacts.write_json(
        run_dir / "config.json",
        {
            "name": run_dir.name,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "dataset": _dataset_record(dataset),
            "model": trainer.section,
            "train": config.to_dict(),
            "reference_config": request.reference_config,
            "world_size": trainer.ranks.world,
            "torch_version": torch.__version__,
        },
        kind="run",
    )


def _rewrite_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """history.jsonl as the checkpoint knows it (a kill may have left a line the checkpoint never saw)."""
    lines = "".join(json.dumps(record, allow_nan=False) + "\n" for record in history)
    artifacts.write_bytes(run_dir / "history.jsonl", lines.encode())
