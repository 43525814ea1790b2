"""The recommend stage: sessions of raw item ids in, each session's top-k raw item ids out, batch by batch.

A model is a bundle (`tron export`) or a run dir (`servable.py`); its catalogue maps raw ids to dense ids and
back. Input is read `batch_size` sessions at a time (`session_input.py`) and each batch's output is written
(`outputs.py`) before the next is read, so an input larger than memory streams through. Scoring: the last
`max_length` known clicks of a session, left-padded, give its state, scored in fp32 against the whole
catalogue in chunks while a running top-k is kept (`scoring.py`). docs/serving.md describes the formats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tron_cli import home
from tron_cli.artifacts import Sessions
from tron_cli.batching import SessionStore
from tron_cli.choices import INPUT_FORMATS
from tron_cli.errors import MissingInputError, UsageError
from tron_cli.outputs import Recommended, open_writer, output_format
from tron_cli.reporting import SILENT, Reporter
from tron_cli.runtime import resolve_device
from tron_cli.scoring import score_sessions
from tron_cli.servable import Servable, load_servable
from tron_cli.session_input import Batch, input_kind, read_batches


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class RecommendOptions:
    k: int = 20
    exclude_seen: bool = False
    batch_size: int = 1024
    input_format: str = "auto"
    output_format: str | None = None  # None: by the output's extension
    device: str = "auto"


def recommend_batch(servable: Servable, batch: Batch, k: int, exclude_seen: bool, device: torch.device) -> tuple[Recommended, int, int]:
    """One batch's recommendations, the number of unknown ids skipped and the sessions that had some."""
    catalogue = servable.catalogue
    k = min(k, len(catalogue))
    dense = catalogue.dense(batch.items)
    owner = np.repeat(np.arange(len(batch)), np.diff(batch.offsets))
    known = dense > 0
    unknown_ids = int((~known).sum())
    unknown_sessions = len(np.unique(owner[~known]))
    lengths = np.bincount(owner[known], minlength=len(batch)).astype(np.int64)
    scored = np.flatnonzero(lengths > 0)
    ids = np.zeros((len(batch), k), dtype=np.int64)
    scores = np.full((len(batch), k), -np.inf, dtype=np.float32)
    ids[lengths == 0] = catalogue.by_clicks[:k]  # no known item: the most popular ones
    if len(scored):
        offsets = np.zeros(len(scored) + 1, dtype=np.int64)
        np.cumsum(lengths[scored], out=offsets[1:])
        store = SessionStore(Sessions(scored, offsets, dense[known].astype(np.int32), np.zeros(int(offsets[-1]), dtype=np.int64)), device)
        windows = store.tail_windows(torch.arange(len(scored), device=device), int(min(servable.max_length, lengths.max())))
        excluded = None
        if exclude_seen:  # every known click of the session, not only those in the window
            excluded = (torch.repeat_interleave(torch.arange(len(scored), device=device), store.lengths), store.items)
        best_scores, best_ids = score_sessions(servable.model, windows, k, excluded)
        ids[scored] = best_ids.cpu().numpy()
        scores[scored] = best_scores.cpu().numpy()
    keep = np.isfinite(scores) | (lengths == 0)[:, None]  # excluded items end a short row with -inf: drop them
    counts = keep.sum(1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    result = Recommended(batch.sessions, batch.where, offsets, catalogue.raw_ids(ids[keep]), scores[keep], lengths == 0)
    return result, unknown_ids, unknown_sessions


def recommend(
    model_path: Path | None, input_path: str = "-", output_path: str = "-", options: RecommendOptions = RecommendOptions(), report: Reporter = SILENT
) -> dict[str, Any]:
    """Run the stage: stream the input's sessions through the model into the output; returns counts."""
    if options.k < 1 or options.batch_size < 1:
        raise UsageError("-k and --batch-size must be at least 1")
    if options.input_format not in INPUT_FORMATS:
        raise UsageError(f"unknown input format {options.input_format!r}", f"Use one of: {', '.join(INPUT_FORMATS)}")
    chosen = output_format(output_path, options.output_format)
    input_kind(input_path, options.input_format)
    if input_path != "-" and not Path(input_path).is_file():
        raise MissingInputError(f"input {input_path} does not exist")
    device = resolve_device(options.device)
    model_path = home.resolve_model(model_path)
    servable = load_servable(model_path, device)
    report.detail(f"{model_path}: {servable.model.__class__.__name__}, {len(servable.catalogue):,} items, the last {servable.max_length} clicks of a session")
    totals = {"sessions": 0, "fallback": 0, "unknown_ids": 0, "unknown_sessions": 0}
    started = time.perf_counter()
    numeric = servable.catalogue.numeric
    with read_batches(input_path, options.input_format, numeric, servable.event_types, options.batch_size, report) as (batches, total):
        with open_writer(output_path, chosen, servable.catalogue.id_type) as writer, report.task("recommending", total=total) as task:
            for batch in batches:
                result, unknown_ids, unknown_sessions = recommend_batch(servable, batch, options.k, options.exclude_seen, device)
                writer.write(result)
                totals["sessions"] += len(batch)
                totals["fallback"] += int(result.fallback.sum())
                totals["unknown_ids"] += unknown_ids
                totals["unknown_sessions"] += unknown_sessions
                task.update(advance=len(batch))
    seconds = time.perf_counter() - started
    if totals["unknown_ids"]:
        report.warn(f"{_count(totals['unknown_ids'], 'unknown item id')} skipped in {_count(totals['unknown_sessions'], 'session')}")
    if totals["fallback"]:
        report.warn(f"{_count(totals['fallback'], 'session')} had no known item: {'they' if totals['fallback'] > 1 else 'it'} got the most popular items")
    if totals["sessions"] == 0:
        report.info(f"{'stdin' if input_path == '-' else input_path} holds no session: nothing to recommend")
    report.detail(f"{totals['sessions']:,} sessions in {seconds:.2f} s ({totals['sessions'] / max(seconds, 1e-9):,.0f} sessions/s)")
    return {**totals, "seconds": seconds, "model": str(model_path), "output_format": chosen.name}
