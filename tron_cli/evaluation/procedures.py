"""How a model is scored on a split: every target ranked against the whole catalogue, metrics summed per session.

Protocol `all` (default): each target of the untruncated session is scored from the `max_length` clicks
before it and the metrics are exact micro-averages over targets. A model reads those clicks as one window
per target (the state after the window's last click, as `tron recommend` computes it), or, when its state
after a click depends only on the clicks before (`SessionModel.prefix_states`, GRU4Rec), in one pass over
each session. For leave-one-out datasets only each session's last item is a target.
Protocol `tron` reproduces the reference: one pass over the last max_length + 1 clicks of each session,
sessions in batches of the run's batch size, the last partial batch dropped, the mean of batch means.
Shared by training's per-epoch validation and `tron evaluate`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tron_cli.artifacts.sessions import Sessions
from tron_cli.batching import SessionStore, owned_ranges
from tron_cli.errors import UsageError
from tron_cli.evaluation import otto_task
from tron_cli.evaluation.metrics import METRICS, Accumulator
from tron_cli.inference.blends import Context
from tron_cli.inference.retrieval import Retriever
from tron_cli.inference.scorer import Scorer
from tron_cli.inference.scoring import Pairs, rank_chunk, rank_targets, top_items
from tron_cli.reporting import SILENT, Reporter
from tron_cli.runtime import cpu_heap, exact_fp32


@dataclass(frozen=True)
class EvalOptions:
    split: str = "test"
    cutoffs: tuple[int, ...] = (5, 10, 20)
    ties: str = "pessimistic"
    protocol: str = "all"
    cut_seed: int = 42  # protocol otto: the seed of the organisers' random cuts (theirs is 42)
    exclude_seen: bool | None = False  # None: the dataset's own (`stages.evaluate.dataset_defaults`)
    bootstrap: int = 0
    seed: int = 0
    chunk_size: int = 65536
    query_batch: int = 0  # 0: 1024 on CPU, 8192 on CUDA
    limit: float = 1.0  # a fraction (<= 1) or a number (> 1) of sessions to evaluate


def parse_metric(name: str, option: str = "--select-on") -> tuple[str, int]:
    """("recall", 20) from "recall@20": a metric of `metrics.METRICS` at a cutoff >= 1, as `tron evaluate` reports them."""
    metric, _, cutoff = str(name).lower().partition("@")
    if metric not in METRICS or not cutoff.isdigit() or int(cutoff) < 1:
        raise UsageError(f"{option} {name!r} is not a metric at a cutoff", f"Use METRIC@K with METRIC one of {', '.join(METRICS)}, e.g. recall@20 or ndcg@10")
    return metric, int(cutoff)


def first_sessions(sessions: Sessions, limit: float) -> Sessions:
    """The first sessions: a fraction of them (limit <= 1) or a number (limit > 1)."""
    n = len(sessions) if limit >= len(sessions) else (int(limit) if limit > 1 else math.ceil(limit * len(sessions)))
    return sessions if n >= len(sessions) else sessions.select(np.arange(n))


def seen_pairs(store: SessionStore, positions: Tensor) -> Pairs:
    """(rows, items): every click before each target position in its session (to exclude from the ranking)."""
    starts = store.offsets[store.session_of(positions)]
    rows, index = owned_ranges(starts, positions - starts)
    return rows, store.items[index]


def finish(accumulator: Accumulator, options: EvalOptions) -> dict[str, Any]:
    """The metrics of an accumulator, with bootstrap intervals when asked for."""
    result = accumulator.result()
    if options.bootstrap:
        result.update(accumulator.bootstrap(options.bootstrap, options.seed))
    return result


def query_batch(options: EvalOptions, device: torch.device) -> int:
    return options.query_batch or (8192 if device.type == "cuda" else 1024)


def _context(scorer: Scorer, store: SessionStore, positions: Tensor, sessions: Tensor | None = None) -> Context | None:
    """The sessions before `positions` that the scorer's blends read; None without blends, whose scores need none
    (and building it reads from the device)."""
    return Context.of_positions(store, positions, sessions) if scorer.blends else None


def _rank(scorer: Scorer, hidden: Tensor, targets: Tensor, options: EvalOptions, excluded: Pairs | None = None, context: Context | None = None) -> Tensor:
    hidden, bonus = hidden.float(), scorer.bonus(context)
    target_scores = scorer.items(hidden, targets[:, None], bonus).squeeze(1).float()
    return rank_targets(
        scorer.chunk(hidden, bonus),
        target_scores,
        targets=targets,
        n_items=scorer.n_items,
        chunk_size=rank_chunk(options.chunk_size, len(targets), targets.device),
        ties=options.ties,
        excluded=excluded,
    )


@torch.no_grad()
def accumulate(scorer: Scorer, store: SessionStore, last_only: bool, options: EvalOptions, report: Reporter = SILENT) -> Accumulator:
    """Per-session metric sums of `scorer` on the sessions in `store`, protocol `all`."""
    with exact_fp32(), cpu_heap(store.device):
        accumulator = Accumulator(len(store), options.cutoffs, store.device, orders=store.ordered is not None)
        for hidden, targets, sessions, positions in target_states(scorer.model, store, last_only=last_only, options=options, report=report):
            excluded = seen_pairs(store, positions) if options.exclude_seen else None
            accumulator.add(
                _rank(scorer, hidden, targets=targets, options=options, excluded=excluded, context=_context(scorer, store, positions)),
                sessions,
                ordered_at(store, positions),
            )
        return accumulator


def ordered_at(store: SessionStore, positions: Tensor) -> Tensor | None:
    """Whether the targets at flat `positions` are ordered later in their sessions (None without orders)."""
    return None if store.ordered is None else store.ordered[positions]


@torch.no_grad()
def evaluate_model(
    scorer: Scorer, store: SessionStore, last_only: bool, options: EvalOptions, batch_size: int = 128, report: Reporter = SILENT
) -> dict[str, Any]:
    """Metrics of `scorer` on the sessions in `store` (micro-averages, or the reference's with protocol tron)."""
    if options.protocol == "tron":
        with exact_fp32(), cpu_heap(store.device):
            return _tron_protocol(scorer, store, options=options, batch_size=batch_size, report=report)
    return finish(accumulate(scorer, store, last_only=last_only, options=options, report=report), options)


def target_states(
    model, store: SessionStore, last_only: bool, options: EvalOptions, report: Reporter = SILENT
) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """(states (Q, d), targets (Q,), their sessions (Q,), their flat positions (Q,)) of every target, batch by batch:
    one pass per session for models with `prefix_states`, else one window per target."""
    if model.prefix_states:
        yield from _session_passes(model, store, last_only=last_only, options=options, report=report)
    else:
        yield from _windows(model, store, last_only=last_only, options=options, report=report)


# windows a CPU encodes at once: a pass's activations (rows x width x d) then stay in its caches; 1.5x over 1,024
# at d 200 on 2 cores (BENCHMARKS.md "Evaluation"). A GPU encodes a whole batch of targets at once.
ENCODE_ROWS = {"cpu": 128}


def encode(model, windows: Tensor) -> Tensor:
    """(Q, d) fp32 states after the last click of left-padded `windows` (Q, W), in slices of `ENCODE_ROWS`."""
    rows = ENCODE_ROWS.get(windows.device.type, len(windows))
    if len(windows) <= rows:
        return model.last_hidden(windows).float()
    return torch.cat([model.last_hidden(windows[first : first + rows]).float() for first in range(0, len(windows), rows)])


def _windows(model, store: SessionStore, last_only: bool, options: EvalOptions, report: Reporter) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """One left-padded window of preceding clicks per target; the state after its last click predicts it."""
    max_length = model.max_length
    positions = store.target_positions(last_only)
    # shortest contexts first, so that each batch of windows is only as wide as its longest context
    context = (positions - store.offsets[store.session_of(positions)]).clamp(max=max_length)
    order = torch.argsort(context, stable=True)
    positions, context = positions[order], context[order]
    sessions = store.session_of(positions)
    step = query_batch(options, store.device)
    firsts = range(0, len(positions), step)
    # each batch is as wide as its last (longest) context: every width read from the device at once
    widths = context[[min(first + step, len(positions)) - 1 for first in firsts]].tolist()
    with report.task("evaluating", total=len(positions)) as task:
        for first, width in zip(firsts, widths):
            chunk = slice(first, first + step)
            windows = store.query_windows(positions[chunk], width)
            yield encode(model, windows), store.items[positions[chunk]], sessions[chunk], positions[chunk]
            task.update(advance=len(windows))


def _session_passes(model, store: SessionStore, last_only: bool, options: EvalOptions, report: Reporter) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """One pass per session over all its clicks; the state after click j predicts click j+1."""
    step = max(1, query_batch(options, store.device) // 16)
    # each batch's width and number of targets, read from the device at once
    batch_of = torch.arange(len(store), device=store.device) // step
    n_batches = -(-len(store) // step)
    width = torch.zeros(n_batches, dtype=torch.long, device=store.device).scatter_reduce_(0, batch_of, store.lengths, "amax")
    targets = (store.lengths >= 2).long() if last_only else (store.lengths - 1).clamp(min=0)
    n_targets = torch.zeros(n_batches, dtype=torch.long, device=store.device).index_add_(0, batch_of, targets)
    shapes = torch.stack([width, n_targets], 1).tolist()
    with report.task("evaluating", total=len(store)) as task:
        for first, (width, count) in zip(range(0, len(store), step), shapes):
            index = torch.arange(first, min(first + step, len(store)), device=store.device)
            lengths = store.lengths[index]
            column = torch.arange(width, device=store.device)
            real = column < lengths[:, None]  # right-padded: (B, W)
            source = (store.offsets[index][:, None] + column).clamp(max=store.n_events - 1)
            items = torch.where(real, store.items[source], 0)
            hidden = model.session_states(items)  # (B, W, d)
            rows, cols = _targets(lengths, last_only, count)  # target at column cols + 1, predicted by state cols
            positions = store.offsets[index][rows] + cols + 1
            yield hidden[rows, cols].float(), items[rows, cols + 1], index[rows], positions
            task.update(advance=len(index))


def list_ranks(ids: Tensor, targets: Tensor) -> Tensor:
    """(Q,) position of each target in its row of a top-k list `ids` (Q, k), inf where it is absent."""
    hit = ids == targets[:, None]
    first = hit.int().argmax(1).double()
    return torch.where(hit.any(1), first, torch.full_like(first, float("inf")))


@torch.no_grad()
def compare_retrieval(retriever: Retriever, store: SessionStore, last_only: bool, options: EvalOptions, report: Reporter = SILENT) -> dict[str, Any]:
    """Metrics of the top-K lists (K = the largest cutoff) that exact scoring and `retriever` (an index) answer for
    every target, their overlap (mean share of the exact top-K that the index's top-K holds) and the seconds each
    spent. Both lists are ranked alike: a target's rank is its position in the list, so the two differ only by
    what the index misses."""
    k = max(options.cutoffs)
    exact, approximate = Accumulator(len(store), options.cutoffs, store.device), Accumulator(len(store), options.cutoffs, store.device)
    overlap, n, seconds = 0.0, 0, {"exact": 0.0, "index": 0.0}
    with exact_fp32():
        for hidden, targets, sessions, positions in target_states(retriever.scorer.model, store, last_only=last_only, options=options, report=report):
            excluded = seen_pairs(store, positions) if options.exclude_seen else None
            started = time.perf_counter()
            context = _context(retriever.scorer, store, positions)
            _, exact_ids = retriever.exact(hidden, min(k, retriever.scorer.n_items), excluded, context=context)
            seconds["exact"] += time.perf_counter() - started
            started = time.perf_counter()
            _, index_ids = retriever.top(hidden, k, excluded, context=context)
            seconds["index"] += time.perf_counter() - started
            exact.add(list_ranks(exact_ids, targets), sessions)
            approximate.add(list_ranks(index_ids, targets), sessions)
            shared = ((index_ids[:, :, None] == exact_ids[:, None, :]) & (exact_ids[:, None, :] > 0)).any(2).sum(1)
            overlap += float((shared.double() / (exact_ids > 0).sum(1).clamp(min=1)).sum())
            n += len(targets)
    return {
        "exact": finish(exact, options),
        "index": finish(approximate, options),
        f"overlap@{k}": overlap / max(n, 1),
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
        "index_fallbacks": retriever.fallbacks,
    }


def _targets(lengths: Tensor, last_only: bool, count: int) -> tuple[Tensor, Tensor]:
    """(rows, columns) of the `count` targets of right-padded sessions of `lengths`, row by row: the state at
    column c predicts the click at c + 1, for every c < length - 1 (or only the last)."""
    per_row = (lengths >= 2).long() if last_only else (lengths - 1).clamp(min=0)
    ends = torch.cumsum(per_row, 0)
    target = torch.arange(count, device=lengths.device)
    rows = torch.searchsorted(ends, target, right=True)
    if last_only:
        return rows, lengths[rows] - 2
    return rows, target - (ends - per_row)[rows]


def _tron_protocol(scorer: Scorer, store: SessionStore, options: EvalOptions, batch_size: int, report: Reporter) -> dict[str, Any]:
    """The reference's evaluation, for parity checks (see the module docstring)."""
    model = scorer.model
    if options.exclude_seen or options.bootstrap:
        raise UsageError("--protocol tron reproduces the reference: it has no --exclude-seen or --bootstrap")
    if model.feeding != "windows":
        raise UsageError("--protocol tron is defined for models trained on windows (sasrec)")
    width = model.max_length + 1
    n_batches = len(store) // batch_size
    names: list[str] = []
    batch_means: list[list[float]] = []
    n_targets = 0
    with report.task("evaluating (tron protocol)", total=n_batches) as task:
        for b in range(n_batches):
            index = torch.arange(b * batch_size, (b + 1) * batch_size, device=store.device)
            sequence = store.tail_windows(index, width)
            inputs, targets = sequence[:, :-1], sequence[:, 1:]
            hidden = model(inputs)
            mask = inputs != 0
            ranks = _rank(scorer, hidden[mask], targets[mask], options, context=_prefixes(inputs, mask) if scorer.blends else None)
            accumulator = Accumulator(1, options.cutoffs, store.device)
            accumulator.add(ranks, torch.zeros_like(targets[mask]))
            result = accumulator.result()
            names = [k for k in result if k != "n_targets"]
            batch_means.append([result[k] for k in names])
            n_targets += int(result["n_targets"])
            task.update(advance=1)
    if not batch_means:
        raise UsageError(f"--protocol tron needs at least one full batch of {batch_size} sessions; the split has {len(store)}")
    means = np.mean(np.array(batch_means), axis=0).tolist()
    return {**dict(zip(names, means)), "n_targets": n_targets}


def _prefixes(inputs: Tensor, mask: Tensor) -> Context:
    """The sessions of the masked positions (M,) of left-padded windows `inputs` (B, W): each position's window
    shifted so that its own click is the last column, the columns before the window's start padding."""
    rows, columns = mask.nonzero(as_tuple=True)
    width = inputs.shape[1]
    source = columns[:, None] - (width - 1) + torch.arange(width, device=inputs.device)  # (M, W)
    shifted = torch.where(source >= 0, inputs[rows[:, None], source.clamp(min=0)], 0)
    return Context.of_windows(shifted)


@torch.no_grad()
def otto_protocol(scorer: Scorer, sessions: Sessions, popular: Tensor, options: EvalOptions, report: Reporter = SILENT) -> dict[str, Any]:
    """OTTO's own task (`otto_task.py`): every session cut as the organisers cut test sessions, the model's
    top-20 from the clicks before the cut (the most clicked items when there is none), scored per event type.
    `popular` (N,) holds the dense ids by train clicks."""
    if options.exclude_seen or options.bootstrap:
        raise UsageError("--protocol otto scores as the organisers do: it has no --exclude-seen or --bootstrap")
    model = scorer.model
    sequence = otto_task.merged(sessions)
    labels = otto_task.cut(sequence, otto_task.draw_cuts(np.diff(sequence.offsets), options.cut_seed))
    device = popular.device
    store = SessionStore(sessions, device)
    k = otto_task.K
    top = popular[:k].expand(len(sessions), -1).clone()  # (S, k)
    read = np.flatnonzero(labels.labelled & (labels.context_clicks > 0))
    step = query_batch(options, device)
    with exact_fp32(), report.task("evaluating (OTTO's task)", total=len(read)) as task:
        for first in range(0, len(read), step):
            index = torch.from_numpy(read[first : first + step]).to(device)
            clicks = torch.from_numpy(labels.context_clicks[read[first : first + step]]).to(device)
            width = int(clicks.clamp(max=model.max_length).max())
            windows = store.query_windows(store.offsets[index] + clicks, width, sessions=index)
            context = _context(scorer, store, store.offsets[index] + clicks, sessions=index)  # every click before the cut
            top[index] = top_items(scorer, model.last_hidden(windows), k, context=context)[1]
            task.update(advance=len(index))
    ids = top.cpu().numpy()
    return otto_task.score(dict.fromkeys(otto_task.TYPES, ids), labels)
