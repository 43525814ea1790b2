"""Benchmark the training loop: sessions/s and events/s of `tron train`'s own epoch code per configuration.

    python benchmarks/train.py                           # CPU: 100k items; CUDA: 1.8M items (OTTO's catalogue)
    python benchmarks/train.py --items 1800000 --steps 50 --configs tron-xl tron-xl-sparse-adam

Data: OTTO-shaped synthetic sessions (benchmarks/_data.py). Each configuration builds a real `Trainer`, runs
warm-up steps, then times `--steps` steps of the same epoch function `tron train` runs (batch assembly,
negative sampling, forward, loss, backward, optimiser) with the device synchronised around the clock.
Prints one table; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import write_dataset

from tron_cli.artifacts.sessions import read_dataset
from tron_cli.training.config import TrainConfig
from tron_cli.training.feeds import EPOCHS
from tron_cli.training.loop import Trainer
from tron_cli.training.order import epoch_order
from tron_cli.training.stop import StopRequest

CONFIGS: dict[str, dict[str, Any]] = {
    "tron-xl": dict(),  # TRON XL: ssm, 16384 batchwise + 127 in-batch negatives, top-100, dense Adam
    "tron-xl-sparse-adam": dict(optimizer="sparse-adam"),
    "tron-xl-sparse-adagrad": dict(optimizer="sparse-adagrad"),
    "sasrec-bce": dict(loss="bce", uniform_negatives=1, sampling_style="eventwise", batch_negatives=0, topk=0),
    "ce": dict(loss="ce", topk=0, batch_negatives=0, uniform_negatives=0),
    "gru4rec": dict(model="gru4rec"),  # the reference's GRU4Rec+ settings are the model's defaults
}


def measure(label: str, options: dict[str, Any], dataset, steps: int, warmup: int) -> dict[str, Any]:
    """One configuration (`tron train` options, device and precision included): `warmup` steps, then `steps`
    timed steps of the epoch function `tron train` runs. Peak memory is the device's (CUDA only)."""
    config = TrainConfig.create(**{**options, "epochs": 1})
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, dataset, Path(run_dir))
        trainer.valid = None
        run = EPOCHS[trainer.model.feeding]
        order = epoch_order(len(trainer.store), "shuffle_without_replacement", trainer.generator)
        trainer.order = order
        cuda = trainer.device.type == "cuda"
        with StopRequest() as stop:
            trainer.config = dataclasses.replace(config, overfit_batches=float(warmup))
            run(trainer, order, 0, stop)
            trainer.state.done = 0
            trainer.config = dataclasses.replace(config, overfit_batches=float(steps))
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            _, trained, events = run(trainer, order, 0, stop)
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
        sessions = float(trained)
        if trainer.model.feeding == "lanes":  # lanes consume clicks, not sessions: convert at the data's targets per session
            sessions = events / float((trainer.store.lengths.clamp(max=config.max_length + 1) - 1).double().mean())
        device_name = torch.cuda.get_device_name() if cuda else "cpu"
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return {
        "config": label,
        "device": device_name,
        "ms/step": 1000 * seconds / steps,
        "sessions/s": sessions / seconds,
        "events/s": events / seconds,
        "peak GiB": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--items", type=int, help="catalogue size (default: 1.8M on CUDA, 100k on CPU)")
    parser.add_argument("--sessions", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tron-bench")
    args = parser.parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    items = args.items or (1_800_000 if cuda else 100_000)
    dataset = read_dataset(write_dataset(args.workdir / f"train-{args.sessions}-{items}", args.sessions, items))
    print(f"training step, {args.sessions:,} OTTO-shaped sessions, {items:,} items, {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'config':<24} {'device':<28} {'ms/step':>9} {'sessions/s':>12} {'events/s':>12}")
    for name in args.configs:
        options = {**CONFIGS[name], "device": "cuda" if cuda else "cpu", "precision": args.precision}
        row = measure(name, options, dataset=dataset, steps=args.steps, warmup=args.warmup)
        print(f"{row['config']:<24} {row['device']:<28} {row['ms/step']:>9.1f} {row['sessions/s']:>12,.0f} {row['events/s']:>12,.0f}", flush=True)


if __name__ == "__main__":
    main()
