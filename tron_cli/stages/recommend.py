"""The recommend stage: sessions of raw item ids in, each session's top-k raw item ids out, batch by batch.

A model is a bundle (`tron export`) or a run dir (`inference/predictor.py`); its catalogue maps raw ids to dense ids and
back. Input is read `batch_size` sessions at a time (`inference/session_input.py`) and each batch's output is written
(`outputs/`) before the next is read, so an input larger than memory streams through. Scoring: the last
`max_length` known clicks of a session, left-padded, give its state, scored in fp32 against the whole
catalogue in chunks while a running top-k is kept (`inference/scoring.py`), or through the bundle's item index
(`inference/retrieval.py`), with the seen items, an allow list and a deny list left out. docs/serving.md describes the formats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tron_cli.choices import INPUT_FORMATS, KAGGLE_ORDER_WEIGHTS, ON_ERROR
from tron_cli.errors import InputFormatError, MissingInputError, UsageError
from tron_cli.inference.predictor import Predictor, load_predictor
from tron_cli.inference.retrieval import NO_FILTERS, Filters
from tron_cli.inference.session_input import Batch, RecordProblem, input_kind, raw_ids, read_batches
from tron_cli.outputs import Recommended, open_writer, output_format
from tron_cli.reporting import SILENT, Reporter
from tron_cli.runtime import resolve_device
from tron_cli.workspace import home

SKIPS_SHOWN = 100  # skipped lines named one by one on stderr; the count at the end covers every one


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
    exact: bool = False  # score the whole catalogue even when the bundle has an item index
    index_params: tuple[str, ...] = ()  # NAME=VALUE search parameters of the index (ef_search, nprobe)
    allow: Path | None = None  # a file of raw ids: recommend only these
    deny: Path | None = None  # a file of raw ids: never recommend these
    on_error: str = "fail"  # a malformed input line: fail before writing anything, or skip it and report it
    order_weight: float | None = None  # MultiTRON: the preference [1 - w, w] (None: a line's own, else DEFAULT_ORDER_WEIGHT)


def read_id_list(path: Path, numeric: bool) -> np.ndarray:
    """Raw ids of an allow or deny list: one a line (blank lines skipped), in the catalogue's type."""
    if not Path(path).is_file():
        raise MissingInputError(f"id list {path} does not exist", "Give a file with one raw item id a line")
    lines = Path(path).read_text(errors="replace").splitlines()
    numbers = [number for number, line in enumerate(lines, 1) if line.strip()]
    values = [lines[number - 1].strip() for number in numbers]
    try:
        ids = raw_ids(values, numeric, lambda i: f"line {numbers[i]}")
    except RecordProblem as problem:
        raise InputFormatError(f"{path}: {problem}", "Give one raw item id a line") from None
    try:
        return np.array(ids, dtype=np.int64) if numeric else np.array(ids, dtype=str)
    except OverflowError:
        raise InputFormatError(f"{path}: an item id is outside the range of the catalogue's 64-bit ids") from None


def recommend_batch(
    predictor: Predictor,
    batch: Batch,
    k: int,
    exclude_seen: bool,
    filters: Filters = NO_FILTERS,
    order_weight: float | None = None,
    per_event_type: bool = False,
) -> tuple[Recommended, int, int]:
    """One batch's recommendations, the number of unknown ids skipped and the sessions that had some. With
    `per_event_type` a MultiTRON model also answers each OTTO event type at its order weight (KAGGLE_ORDER_WEIGHTS)."""
    encoded = predictor.encode(batch, order_weight)
    result = predictor.recommended(batch, predictor.answer(encoded, np.arange(len(batch)), k=k, exclude_seen=exclude_seen, filters=filters))
    if per_event_type and predictor.model.preference_input:
        typed = {}
        for kind, weight in KAGGLE_ORDER_WEIGHTS.items():
            answer = predictor.recommended(
                batch,
                predictor.answer(
                    predictor.encode(replace(batch, order_weights=None), weight), np.arange(len(batch)), k=k, exclude_seen=exclude_seen, filters=filters
                ),
            )
            typed[kind] = (answer.offsets, answer.ids)
        result.typed = typed
    return result, int(encoded.unknown.sum()), int((encoded.unknown > 0).sum())


def recommend(
    model_path: Path | None, input_path: str = "-", output_path: str = "-", options: RecommendOptions = RecommendOptions(), report: Reporter = SILENT
) -> dict[str, Any]:
    """Run the stage: stream the input's sessions through the model into the output; returns counts."""
    if options.k < 1 or options.batch_size < 1:
        raise UsageError("-k and --batch-size must be at least 1")
    if options.order_weight is not None and not 0 <= options.order_weight <= 1:
        raise UsageError("--order-weight must be from 0 to 1")
    if options.input_format not in INPUT_FORMATS:
        raise UsageError(f"unknown input format {options.input_format!r}", f"Use one of: {', '.join(INPUT_FORMATS)}")
    if options.on_error not in ON_ERROR:
        raise UsageError(f"unknown --on-error {options.on_error!r}", f"Use one of: {', '.join(ON_ERROR)}")
    chosen = output_format(output_path, options.output_format)
    input_kind(input_path, options.input_format)
    if input_path != "-" and not Path(input_path).is_file():
        raise MissingInputError(f"input {input_path} does not exist")
    device = resolve_device(options.device)
    model_path = home.resolve_model(model_path)
    predictor = load_predictor(model_path, device, options.exact, options.index_params)
    numeric = predictor.catalogue.numeric
    filters = predictor.filters(
        None if options.allow is None else read_id_list(options.allow, numeric), None if options.deny is None else read_id_list(options.deny, numeric)
    )
    report.detail(
        f"{model_path}: {predictor.model.__class__.__name__}, {len(predictor.catalogue):,} items, the last {predictor.max_length} clicks of a session, "
        f"{predictor.retriever.mode} scoring"
    )
    totals = {"sessions": 0, "fallback": 0, "unknown_ids": 0, "unknown_sessions": 0}
    started = time.perf_counter()
    skipped: list[str] = []

    def skip(where: str, reason: str) -> None:
        skipped.append(where)
        if len(skipped) <= SKIPS_SHOWN:
            report.warn(f"{where}: {reason}; skipped")

    with read_batches(
        input_path,
        options.input_format,
        numeric=numeric,
        event_types=predictor.event_types,
        batch_size=options.batch_size,
        report=report,
        skip=skip if options.on_error == "skip" else None,
    ) as (batches, total):
        with open_writer(output_path, chosen, predictor.catalogue.id_type) as writer, report.task("recommending", total=total) as task:
            for batch in batches:
                result, unknown_ids, unknown_sessions = recommend_batch(
                    predictor,
                    batch,
                    k=options.k,
                    exclude_seen=options.exclude_seen,
                    filters=filters,
                    order_weight=options.order_weight,
                    per_event_type=chosen.per_event_type,
                )
                writer.write(result)
                totals["sessions"] += len(batch)
                totals["fallback"] += int(result.fallback.sum())
                totals["unknown_ids"] += unknown_ids
                totals["unknown_sessions"] += unknown_sessions
                task.update(advance=len(batch))
    seconds = time.perf_counter() - started
    if skipped:
        more = f" ({len(skipped) - SKIPS_SHOWN:,} not shown)" if len(skipped) > SKIPS_SHOWN else ""
        report.warn(f"{_count(len(skipped), 'malformed line')} skipped{more}: every other session was recommended for")
    if totals["unknown_ids"]:
        report.warn(f"{_count(totals['unknown_ids'], 'unknown item id')} skipped in {_count(totals['unknown_sessions'], 'session')}")
    if totals["fallback"]:
        report.warn(f"{_count(totals['fallback'], 'session')} had no known item: {'they' if totals['fallback'] > 1 else 'it'} got the most popular items")
    if totals["sessions"] == 0:
        report.info(f"{'stdin' if input_path == '-' else input_path} holds no session: nothing to recommend")
    if predictor.retriever.fallbacks:
        report.detail(f"{_count(predictor.retriever.fallbacks, 'session')} scored exactly: the index's candidates left fewer than k items after the filters")
    report.detail(f"{totals['sessions']:,} sessions in {seconds:.2f} s ({totals['sessions'] / max(seconds, 1e-9):,.0f} sessions/s)")
    return {
        **totals,
        "skipped_lines": len(skipped),
        "seconds": seconds,
        "model": str(model_path),
        "output_format": chosen.name,
        "scoring": predictor.retriever.mode,
    }
