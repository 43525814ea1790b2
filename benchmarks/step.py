"""Benchmark one training step: `tron`'s step against a stand-in of the reference's step, interleaved.

    python benchmarks/step.py                         # TRON XL and the small config, medians of ten rounds
    python benchmarks/step.py --threads 1             # the same with one thread (a shared machine's other load
                                                      # makes every parallel region wait for a core)
    python benchmarks/step.py --profile tron --configs xl   # a torch.profiler table of tron's step instead

**The reference stand-in is not the reference code.** otto-de/TRON (PyTorch Lightning) cannot run here, so
`ReferenceStep` re-states in our own words the arithmetic of its SASRec training step, as read in its
`src/sasrec/model.py`, `src/shared/loss.py` and `src/shared/logits_computation.py`: every batch padded to the
maximum length, `nn.TransformerEncoder` (pre-LN, one head, feed-forward width d) under a merged padding,
causal and self mask; the scores of the target and of every negative at *every* position, padding included,
as one (B, T, U + m) matrix with autograd (batchwise uniform negatives against the whole batch, in-batch
negatives per session); top-k of that matrix; sampled softmax masked by real positions; dense Adam over every
parameter, the item table included. It leaves out what only slows the reference down (Lightning's loop and
logging, the DataLoader's JSON parsing per session, rejection of batch items by a Python loop), so the ratio
it gives flatters the reference.

Both sides train on the same batches of OTTO-shaped synthetic sessions (benchmarks/_data.py); `tron`'s side
is a real `Trainer` running the epoch function `tron train` runs (batch assembly, negatives, forward, loss,
backward, optimiser). Rounds alternate the two sides; each figure is the median of the rounds' target
events/s. Prints one table; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import write_dataset
from _roofline import bf16_rate, describe, machine_rates

from tron_cli import runtime
from tron_cli.artifacts.sessions import read_dataset
from tron_cli.batching import SessionStore
from tron_cli.runtime import cpu_training
from tron_cli.training.config import TrainConfig
from tron_cli.training.feeds import EPOCHS
from tron_cli.training.loop import Trainer
from tron_cli.training.order import epoch_order
from tron_cli.training.sampling import in_batch_negatives
from tron_cli.training.stop import StopRequest
from tron_cli.training.top_columns import MIN_WIDTHS, candidate_width

CONFIGS: dict[str, dict[str, Any]] = {
    "xl": dict(hidden_size=200, uniform_negatives=16384, batch_negatives=127, topk=100),  # TRON XL
    "small": dict(hidden_size=64, uniform_negatives=2048, batch_negatives=127, topk=100),
}


class ReferenceStep(nn.Module):
    """A stand-in of the reference's SASRec training step (see the module docstring); not the reference code."""

    def __init__(self, n_items: int, d: int, max_length: int, dropout: float, uniform: int, in_batch: int, topk: int, lr: float):
        super().__init__()
        self.n_items, self.d, self.max_length = n_items, d, max_length
        self.n_uniform, self.n_in_batch, self.topk = uniform, in_batch, topk
        self.items = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.positions = nn.Embedding(max_length, d)
        nn.init.xavier_uniform_(self.items.weight)
        nn.init.xavier_uniform_(self.positions.weight)
        layer = nn.TransformerEncoderLayer(d, 1, dim_feedforward=d, dropout=dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.dropout = nn.Dropout(dropout)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)

    def forward(self, clicks: Tensor, mask: Tensor) -> Tensor:
        t = clicks.shape[1]
        future = torch.ones(t, t, dtype=torch.bool, device=clicks.device).triu(1)  # True: not allowed
        blocked = (~mask[:, None, :]) | future  # (B, T, T)
        blocked = blocked & ~torch.eye(t, dtype=torch.bool, device=clicks.device)  # a position always sees itself
        x = self.items(clicks) * math.sqrt(self.d) + self.positions.weight[-t:]
        return self.encoder(self.dropout(x), blocked)

    def step(self, clicks: Tensor, labels: Tensor, generator: torch.Generator) -> None:
        mask = clicks != 0
        uniform = torch.randint(1, self.n_items + 1, (self.n_uniform,), generator=generator, device=clicks.device)
        in_batch, _ = in_batch_negatives(clicks, self.n_in_batch, True, generator)  # (B, m)
        hidden = self(clicks, mask)  # (B, T, d) at every position, padding included
        positive = (hidden * self.items(labels)).sum(-1, keepdim=True)  # (B, T, 1)
        uniform_scores = hidden @ self.items(uniform).T  # (B, T, U): one matrix with autograd
        in_batch_scores = hidden @ self.items(in_batch).transpose(1, 2)  # (B, T, m)
        negative = torch.cat([uniform_scores, in_batch_scores], dim=-1).topk(self.topk, dim=-1).values
        logits = torch.cat([positive, negative], dim=-1)  # (B, T, 1 + k)
        per_position = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.zeros(logits.shape[0] * logits.shape[1], dtype=torch.long), reduction="none")
        loss = (per_position * mask.reshape(-1)).sum() / mask.sum()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


class ReferenceSide:
    def __init__(self, store: SessionStore, order: Tensor, n_items: int, config: TrainConfig, seed: int):
        torch.manual_seed(seed)
        network = config.network
        self.model = ReferenceStep(
            n_items,
            network.hidden_size,
            max_length=network.max_length,
            dropout=network.dropout,
            uniform=config.uniform_negatives,
            in_batch=config.in_batch_negatives,
            topk=config.topk,
            lr=config.lr,
        )
        self.store, self.order, self.batch = store, order, config.batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def run(self, steps: int) -> tuple[float, int]:
        """(seconds, target events) of `steps` steps on the first batches of the order."""
        events = 0
        started = time.perf_counter()
        for start in range(0, steps * self.batch, self.batch):
            sequence = self.store.tail_windows(self.order[start : start + self.batch], self.model.max_length + 1)  # (B, T+1): always padded to T
            clicks, labels = sequence[:, :-1], sequence[:, 1:]
            self.model.step(clicks, labels, self.generator)
            events += int((clicks != 0).sum())
        return time.perf_counter() - started, events


class TronSide:
    def __init__(self, dataset, config: TrainConfig, order_seed: int, workdir: Path):
        self.trainer = Trainer(config, dataset, workdir)
        self.trainer.valid = None
        self.run_epoch = EPOCHS[self.trainer.model.feeding]
        self.order = epoch_order(len(self.trainer.store), "shuffle_without_replacement", torch.Generator().manual_seed(order_seed))
        self.trainer.order = self.order
        self.config = config

    def run(self, steps: int) -> tuple[float, int]:
        trainer = self.trainer
        trainer.state.done = 0
        trainer.config = dataclasses.replace(self.config, overfit_batches=float(steps))
        with StopRequest() as stop, cpu_training(trainer.device):  # as `tron train` runs its epochs
            started = time.perf_counter()
            _, _, events = self.run_epoch(trainer, self.order, 0, stop)
            return time.perf_counter() - started, events


def profile(side, steps: int, rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        side.run(steps)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=50_000)
    parser.add_argument("--steps", type=int, default=4, help="steps per side per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--profile", choices=["tron", "reference"], help="print a torch.profiler table of that side's steps instead")
    parser.add_argument("--rows", type=int, default=25, help="rows of the profiler table")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    parser.add_argument("--tron", nargs="*", default=[], metavar="KEY=VALUE", help="extra tron train options for tron's side (e.g. optimizer=sparse-adam)")
    parser.add_argument("--no-header", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tron-bench")
    args = parser.parse_args()
    extra = {key: _value(value) for key, value in (option.split("=", 1) for option in args.tron)}
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_header and not args.profile:
        print(f"training step on cpu ({torch.get_num_threads()} threads), {args.sessions:,} OTTO-shaped sessions, {args.items:,} items, batch 128, ")
        print(f"{args.rounds} interleaved rounds of {args.steps} steps per side after {args.warmup} warm-up; medians of target events/s")
        print(f"{'config':<8} {'side':<22} {'ms/step':>9} {'events/s':>10} {'tron / reference':>17}", flush=True)
    if len(args.configs) > 1:  # each config in a process of its own: one config's allocations shape the next one's heap
        for name in args.configs:
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--configs", name, "--no-header"], check=True)
        return
    dataset = read_dataset(write_dataset(args.workdir / f"train-{args.sessions}-{args.items}", args.sessions, args.items))
    for name in args.configs:
        config = TrainConfig.create(**{**CONFIGS[name], **extra, "device": "cpu", "precision": "fp32", "epochs": 1})
        with tempfile.TemporaryDirectory() as run_dir:
            tron = TronSide(dataset, config, order_seed=1, workdir=Path(run_dir))
            reference = ReferenceSide(tron.trainer.store, tron.order, dataset.n_items, config, seed=0)
            if args.profile:
                side: TronSide | ReferenceSide = tron if args.profile == "tron" else reference
                side.run(args.warmup)
                print(f"{name}: {args.profile} side, {args.steps} steps")
                profile(side, args.steps, args.rows)
                continue
            sides: dict[str, TronSide | ReferenceSide] = {"reference stand-in": reference, "tron": tron}
            for each in sides.values():
                each.run(args.warmup)
            rates: dict[str, list[float]] = {label: [] for label in sides}
            times: dict[str, list[float]] = {label: [] for label in sides}
            for _ in range(args.rounds):
                for label, each in sides.items():
                    seconds, events = each.run(args.steps)
                    rates[label].append(events / seconds)
                    times[label].append(1000 * seconds / args.steps)
            base = statistics.median(rates["reference stand-in"])
            for label in sides:
                rate = statistics.median(rates[label])
                print(f"{name:<8} {label:<22} {statistics.median(times[label]):>9.1f} {rate:>10,.0f} {rate / base:>16.2f}x", flush=True)
            events_per_step = statistics.median(rates["tron"]) * statistics.median(times["tron"]) / 1000
            print(roofline(name, tron.trainer.model, config, dataset.n_items, events_per_step, statistics.median(times["tron"])), flush=True)


def roofline(name: str, model: nn.Module, config: TrainConfig, n_items: int, events: float, ms_per_step: float) -> str:
    """The floor of one training step on this machine and the fraction of it tron's step reached: the encoder forward
    and backward (2 + 4 FLOPs per weight per event; attention, a few per cent at these lengths, left out), every
    event's scores against the shared negatives without gradients, the top-k's gradients to the states and to the
    rows (2 x 2 x d x k per event), and dense Adam's pass over every parameter (param, grad, two moments: 7 floats
    moved per weight)."""
    flops_rate, bandwidth = machine_rates(torch.device("cpu"), config.network.hidden_size)
    d = config.network.hidden_size
    blocks = sum(p.numel() for n, p in model.named_parameters() if "blocks" in n)
    encoder = 6 * blocks * events
    negatives = 2 * d * (config.uniform_negatives + config.in_batch_negatives) * events + 4 * d * config.topk * events
    weights = sum(p.numel() for p in model.parameters())
    optimizer = 7 * 4 * weights
    floor_ms = 1000 * ((encoder + negatives) / flops_rate + optimizer / bandwidth)
    text = (
        f"{name:<8} floor of a step ({events:,.0f} events): encoder {encoder / 1e9:.1f} + negatives {negatives / 1e9:.1f} GFLOP"
        f" -> {1000 * (encoder + negatives) / flops_rate:.1f} ms; Adam {optimizer / 1e9:.2f} GB -> {1000 * optimizer / bandwidth:.1f} ms;"
        f" in all {floor_ms:.1f} ms: tron's step at {floor_ms / ms_per_step:.0%} of the floor\n{'':<8} machine: {describe(flops_rate, bandwidth)}"
    )
    wanted = config.topk + 1  # k + the most hits of an event, about one at these sizes
    candidates = candidate_width(wanted)
    if not runtime.cpu_bf16_products() or config.uniform_negatives < MIN_WIDTHS * candidates:
        return text
    # the bf16 prefilter (training/top_columns.py): the shared negatives' product in bf16, the candidates rescored in fp32
    rough = 2 * d * config.uniform_negatives * events
    exact = negatives - rough + 2 * d * candidates * events
    low_rate = bf16_rate(torch.device("cpu"), d)
    prefilter_ms = 1000 * ((encoder + exact) / flops_rate + rough / low_rate + optimizer / bandwidth)
    return (
        f"{text}\n{'':<8} with the bf16 prefilter this CPU takes ({low_rate / 1e9:,.0f} GFLOP/s in bf16): negatives {rough / 1e9:.1f}"
        f" GFLOP in bf16 + {exact / 1e9:.1f} in fp32, in all {prefilter_ms:.1f} ms: tron's step at {prefilter_ms / ms_per_step:.0%} of that floor"
    )


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


if __name__ == "__main__":
    main()
