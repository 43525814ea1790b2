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
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tron_cli.choices import INPUT_FORMATS, KAGGLE_ORDER_WEIGHTS, ON_ERROR
from tron_cli.errors import InputFormatError, MissingInputError, UsageError
from tron_cli.inference.predictor import Predictor
from tron_cli.inference.retrieval import NO_FILTERS, Filters
from tron_cli.inference.session_input import Batch, RecordProblem, input_kind, raw_ids, read_batches
from tron_cli.outputs import OutputFormat, Recommended, open_writer, output_format
from tron_cli.reporting import SILENT, Reporter

SKIPS_SHOWN = 100  # skipped lines named one by one on stderr; the count at the end covers every one


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class RecommendOptions:
    """What `tron recommend` can be told besides how to load the model (--device, --exact, --index-param: `load_predictor`)."""

    k: int = 20
    exclude_seen: bool = False
    batch_size: int = 1024
    input_format: str = "auto"
    output_format: str | None = None  # None: by the output's extension
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
    return id_array(
        [lines[number - 1].strip() for number in numbers], numeric, where=str(path), label=lambda i: f"line {numbers[i]}", hint="Give one raw item id a line"
    )


def id_array(values: list, numeric: bool, *, where: str, label: Callable[[int], str], hint: str) -> np.ndarray:
    """Raw ids in the catalogue's type (int64 or str); a value that cannot be one is an error naming `where` and its `label`."""
    try:
        ids = raw_ids(values, numeric, label)
    except RecordProblem as problem:
        raise InputFormatError(f"{where}: {problem}", hint) from None
    try:
        return np.array(ids, dtype=np.int64) if numeric else np.array(ids, dtype=str)
    except OverflowError:
        raise InputFormatError(f"{where}: an item id is outside the range of the catalogue's 64-bit ids") from None


def recommend_batch(
    predictor: Predictor,
    batch: Batch,
    k: int,
    exclude_seen: bool,
    filters: Filters = NO_FILTERS,
    order_weight: float | None = None,
    per_event_type: bool = False,
) -> tuple[Recommended, np.ndarray]:
    """One batch's recommendations and the unknown ids skipped in each session (int64 (S,)). With
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
    return result, encoded.unknown


def check_request(input_path: str, output_path: str, options: RecommendOptions) -> OutputFormat:
    """Refuse options and paths that cannot work, before a model is loaded; returns the output's format."""
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
    return chosen


def warn_unknown(report: Reporter, unknown_ids: int, unknown_sessions: int, fallback: int) -> None:
    """Say how many unknown ids were skipped, and how many sessions got the popular fallback."""
    if unknown_ids:
        report.warn(f"{_count(unknown_ids, 'unknown item id')} skipped in {_count(unknown_sessions, 'session')}")
    if fallback:
        report.warn(f"{_count(fallback, 'session')} had no known item: {'they' if fallback > 1 else 'it'} got the most popular items")


def recommend(
    predictor: Predictor, input_path: str = "-", output_path: str = "-", options: RecommendOptions = RecommendOptions(), report: Reporter = SILENT
) -> dict[str, Any]:
    """Run the stage: stream the input's sessions through a loaded model (`inference.predictor.load_predictor`) into
    the output; returns counts."""
    chosen = check_request(input_path, output_path, options)
    model_path = predictor.path
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
                result, unknown = recommend_batch(
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
                totals["unknown_ids"] += int(unknown.sum())
                totals["unknown_sessions"] += int((unknown > 0).sum())
                task.update(advance=len(batch))
    seconds = time.perf_counter() - started
    if skipped:
        more = f" ({len(skipped) - SKIPS_SHOWN:,} not shown)" if len(skipped) > SKIPS_SHOWN else ""
        report.warn(f"{_count(len(skipped), 'malformed line')} skipped{more}: every other session was recommended for")
    warn_unknown(report, totals["unknown_ids"], totals["unknown_sessions"], totals["fallback"])
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
