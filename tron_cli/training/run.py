"""Training one run dir from start to summary.json, shared by `tron train` and each trial of `tron tune`.

The caller has built the `Trainer` (and restored it, to resume); this writes config.json (or updates it on
resume), opens the run's trackers, runs the loop with the caller's callbacks and the trackers', and writes
summary.json. Only rank 0 writes or tracks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tron_cli import tracking
from tron_cli.artifacts.documents import read_json, write_json
from tron_cli.artifacts.sessions import Dataset
from tron_cli.runtime import cpu_training
from tron_cli.training.callbacks import Callback
from tron_cli.training.config import TrainConfig
from tron_cli.training.loop import Trainer
from tron_cli.training.rundir import dataset_record, start_new, start_resumed


def run_document(run_dir: Path, trainer: Trainer, dataset: Dataset, config: TrainConfig, reference_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """config.json of a new run."""
    return {
        "name": run_dir.name,
        "dataset": dataset_record(dataset),
        "model": trainer.section,
        "train": config.to_dict(),
        "scorer": trainer.scorer.section(),
        "reference_config": reference_config,
        "world_size": trainer.ranks.world,
        "torch_version": torch.__version__,
    }


def execute(trainer: Trainer, document: dict[str, Any] | None, callbacks: tuple[Callback, ...] = ()) -> dict[str, Any]:
    """Train `trainer` into its run dir: a new run with config.json `document`, or (None) a restored one."""
    run_dir, ranks, config = trainer.run_dir, trainer.ranks, trainer.config
    if ranks.main:
        if document is None:
            start_resumed(run_dir, config.to_dict(), trainer.state.history)
        else:
            start_new(run_dir, document)
        trainer.scorer.save_files(run_dir, trainer.catalogue)  # the blends travel with the run, as its weights do
    ranks.barrier()
    with tracking.tracked(config.track if ranks.main else (), run_dir) as trackers:
        trainer.callbacks = (*callbacks, *trackers)
        with cpu_training(trainer.device):
            summary = trainer.fit()
        if ranks.main:
            if trainer.blends is not None:  # the blends chosen on validation: their files, then config.json names them
                trainer.scorer.save_files(run_dir, trainer.catalogue)
                document = read_json(run_dir / "config.json", "run")
                kept = {key: value for key, value in document.items() if key not in ("schema", "tron_version")}
                write_json(run_dir / "config.json", {**kept, "scorer": trainer.scorer.section()}, kind="run")
            write_json(run_dir / "summary.json", summary, kind="summary")
    ranks.barrier()
    return summary
