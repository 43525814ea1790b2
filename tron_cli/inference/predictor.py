"""A trained model ready to answer: the network in eval mode, its catalogue, how it reads sessions, and how it
finds each session's top-k (exactly, or through the bundle's item index).

Loaded from a bundle (`tron export`: its own items.parquet, every file checked against its recorded sha256) or
a run dir (the items.parquet of the dataset it was trained on, which must not have changed since). Answering
is two steps, so that a server can run the model once over sessions of many requests and then answer each
request with its own k and filters: `encode` (raw ids -> the state after each session's last known click) and
`answer` (states -> top-k). Used by `tron recommend` and the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tron_cli.artifacts.sessions import Sessions, read_dataset, read_items
from tron_cli.batching import SessionStore
from tron_cli.choices import DEFAULT_ORDER_WEIGHT
from tron_cli.errors import ArtifactError, MissingInputError, UsageError
from tron_cli.inference.blends import Context
from tron_cli.inference.catalogue import Catalogue
from tron_cli.inference.index import INDEXES, ItemIndex, load_index, parse_params
from tron_cli.inference.retrieval import NO_FILTERS, Filters, Retriever, filters_from_dense
from tron_cli.inference.scorer import Scorer, load_scorer
from tron_cli.inference.scoring import Pairs
from tron_cli.inference.session_input import Batch
from tron_cli.modelio import read_model_dir
from tron_cli.outputs import Recommended

PASS_COST = 256  # what one more pass of the model costs on a CPU, in window cells (sessions x clicks): its operators' own


def width_groups(lengths: np.ndarray, device: torch.device) -> list[tuple[np.ndarray, int]]:
    """[(rows, width)]: the sessions of clicks `lengths` (R,) in one pass over windows as wide as the longest, or on a
    CPU, where padded cells cost as much as clicks, in two: the shortest ones in windows as wide as the longest of
    them, where that saves more cells than a pass costs (`PASS_COST`). A server's batch of 64 sessions of 1-20
    random clicks reads 22-30 % fewer cells so (10th-90th percentile; a GPU runs one wide pass as fast)."""
    rows = np.arange(len(lengths))
    widest = int(lengths.max())
    if device.type != "cpu" or len(lengths) < 2:
        return [(rows, widest)]
    order = np.argsort(lengths, kind="stable")
    ascending = lengths[order]
    split = np.arange(1, len(lengths))  # the first `split` sessions in the narrower pass
    cells = split * ascending[split - 1] + (len(lengths) - split) * widest
    best = int(np.argmin(cells))
    if cells[best] + PASS_COST >= len(lengths) * widest:
        return [(rows, widest)]
    first = int(split[best])
    return [(order[:first], int(ascending[first - 1])), (order[first:], widest)]


@dataclass
class Encoded:
    """The sessions of a batch as the model read them."""

    lengths: np.ndarray  # (S,) known clicks of each session
    unknown: np.ndarray  # (S,) unknown ids skipped in each session
    scored: np.ndarray  # (R,) the sessions with a known click, whose states follow
    hidden: Tensor  # (R, d) the state after each scored session's last known click
    clicks: Pairs  # (row of `scored`, dense id): every known click of the scored sessions, in click order
    context: Context  # the same clicks as the scorer's blends read them


@dataclass
class Answer:
    """Top-k of some sessions of a batch: dense ids (0 = empty slot), fp32 scores (-inf there), best first."""

    sessions: np.ndarray  # (A,) positions in the batch
    ids: np.ndarray  # (A, k) int64
    scores: np.ndarray  # (A, k) float32
    fallback: np.ndarray  # (A,) bool: no known item, the most popular items instead

    def lists(self, catalogue: Catalogue) -> list[tuple[list, list[float] | None]]:
        """(raw ids, scores or None for a fallback) of each answered session, empty slots dropped."""
        out = []
        for ids, scores, fallback in zip(self.ids, self.scores, self.fallback):
            keep = ids > 0
            out.append((catalogue.raw_ids(ids[keep]).tolist(), None if fallback else scores[keep].tolist()))
        return out


@dataclass
class Predictor:
    """What recommending needs: the scorer (the network in eval mode and its blends) behind a retriever, the
    catalogue and how the model reads sessions."""

    catalogue: Catalogue
    event_types: tuple[str, ...]  # OTTO event types the training dataset kept
    path: Path
    kind: str  # "bundle" or "run"
    document: dict[str, Any]  # the bundle's or run's config.json
    retriever: Retriever
    device: torch.device

    @property
    def scorer(self) -> Scorer:
        return self.retriever.scorer

    @property
    def model(self) -> Any:
        """The network: what turns sessions into states."""
        return self.retriever.scorer.model

    @property
    def max_length(self) -> int:
        """Clicks of a session the model reads (the most recent ones)."""
        return self.model.max_length

    @property
    def index(self) -> ItemIndex | None:
        return self.retriever.index

    def filters(self, allow: np.ndarray | None = None, deny: np.ndarray | None = None) -> Filters:
        """Filters from raw ids of the catalogue's type (unknown ones are ignored)."""
        if allow is None and deny is None:
            return NO_FILTERS
        dense = self.catalogue.dense
        return filters_from_dense(None if allow is None else dense(allow), None if deny is None else dense(deny))

    def preferences(self, batch: Batch, order_weight: float | None) -> np.ndarray | None:
        """(S, 2) the preference [1 - w, w] each session is answered at: its own "order_weight", else
        `order_weight`, else DEFAULT_ORDER_WEIGHT; None for a model without a preference input."""
        asked = order_weight is not None or (batch.order_weights is not None and not np.isnan(batch.order_weights).all())
        if not self.model.preference_input:
            if asked:
                raise UsageError(f"{self.path} reads no preference vector: an order weight needs a model trained with --objective multitron")
            return None
        weights = np.full(len(batch), DEFAULT_ORDER_WEIGHT if order_weight is None else order_weight, dtype=np.float64)
        if batch.order_weights is not None:
            weights = np.where(np.isnan(batch.order_weights), weights, batch.order_weights)
        return np.stack([1 - weights, weights], 1)

    @torch.no_grad()
    def encode(self, batch: Batch, order_weight: float | None = None) -> Encoded:
        """Each session's last `max_length` known clicks, left-padded, through the model in one batch; a model
        with a preference input reads each session's (`preferences`)."""
        preferences = self.preferences(batch, order_weight)
        dense = self.catalogue.dense(batch.items)
        owner = np.repeat(np.arange(len(batch)), np.diff(batch.offsets))
        known = dense > 0
        unknown = np.bincount(owner[~known], minlength=len(batch)).astype(np.int64)
        if batch.dropped is not None:
            unknown += batch.dropped
        lengths = np.bincount(owner[known], minlength=len(batch)).astype(np.int64)
        scored = np.flatnonzero(lengths > 0)
        device = self.device
        if not len(scored):
            empty = torch.zeros(0, dtype=torch.long, device=device)
            hidden = torch.zeros((0, self.model.output_size), device=device)
            return Encoded(lengths, unknown, scored=scored, hidden=hidden, clicks=(empty, empty), context=Context.of_clicks(empty, empty, 0))
        offsets = np.zeros(len(scored) + 1, dtype=np.int64)
        np.cumsum(lengths[scored], out=offsets[1:])
        store = SessionStore(Sessions(scored, offsets, dense[known].astype(np.int32), np.zeros(int(offsets[-1]), dtype=np.int64)), device)
        windows = store.tail_windows(torch.arange(len(scored), device=device), int(min(self.max_length, lengths.max())))
        read = np.minimum(lengths[scored], windows.shape[1])  # (R,) clicks each window holds
        hidden = torch.empty((len(scored), self.model.output_size), device=device)
        for rows, width in width_groups(read, device):
            index = torch.from_numpy(rows).to(device)
            if preferences is None:
                hidden[index] = self.model.last_hidden(windows[index, -width:]).float()
            else:
                hidden[index] = self.model.last_hidden(windows[index, -width:], torch.from_numpy(preferences[scored][rows]).float().to(device)).float()
        clicks = (torch.repeat_interleave(torch.arange(len(scored), device=device), store.lengths), store.items)
        return Encoded(lengths, unknown, scored=scored, hidden=hidden, clicks=clicks, context=Context.of_clicks(*clicks, n_rows=len(scored)))

    def answer(self, encoded: Encoded, sessions: np.ndarray, k: int, exclude_seen: bool = False, filters: Filters = NO_FILTERS) -> Answer:
        """Top-k of `sessions` (positions in the encoded batch): the model's for sessions with a known click (with
        `exclude_seen`, none of the session's own known clicks), the most popular items for the others; allow and
        deny lists apply to both."""
        k = min(k, len(self.catalogue))
        sessions = np.asarray(sessions, dtype=np.int64)
        ids = np.zeros((len(sessions), k), dtype=np.int64)
        scores = np.full((len(sessions), k), -np.inf, dtype=np.float32)
        fallback = encoded.lengths[sessions] == 0
        if fallback.any():
            popular = self.catalogue.by_clicks
            if filters.allow is not None:
                popular = popular[np.isin(popular, filters.allow)]
            if filters.deny is not None and len(filters.deny):
                popular = popular[~np.isin(popular, filters.deny)]
            ids[fallback, : min(k, len(popular))] = popular[:k]
        row_of = np.full(len(encoded.lengths), -1, dtype=np.int64)
        row_of[encoded.scored] = np.arange(len(encoded.scored))
        answered = np.flatnonzero(~fallback)
        if len(answered):
            device = self.device
            rows = torch.from_numpy(row_of[sessions[answered]]).to(device)
            excluded = None
            if exclude_seen:  # every known click of the session, not only those in the window
                where = torch.full((len(encoded.scored),), -1, dtype=torch.long, device=device)
                where[rows] = torch.arange(len(rows), device=device)
                keep = where[encoded.clicks[0]] >= 0
                excluded = (where[encoded.clicks[0][keep]], encoded.clicks[1][keep])
            context = encoded.context.select(rows)
            best_scores, best_ids = self.retriever.top(encoded.hidden[rows], k, excluded=excluded, filters=filters, context=context)
            ids[answered] = best_ids.cpu().numpy()
            scores[answered] = best_scores.cpu().numpy()
        return Answer(sessions, ids, scores, fallback)

    def recommended(self, batch: Batch, answer: Answer) -> Recommended:
        """The answer of a whole batch (in batch order) as output writers take it."""
        keep = answer.ids > 0
        offsets = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int64)
        return Recommended(
            batch.sessions, batch.where, offsets=offsets, ids=self.catalogue.raw_ids(answer.ids[keep]), scores=answer.scores[keep], fallback=answer.fallback
        )


def load_predictor(path: Path, device: torch.device, exact: bool = False, index_params: tuple[str, ...] = ()) -> Predictor:
    """A bundle (its own items.parquet, and its item index unless `exact`) or a run dir (the items.parquet of the
    dataset it was trained on; exact scoring). `index_params` are NAME=VALUE search parameters of the index."""
    path = Path(path)
    if not path.is_dir():
        raise MissingInputError(f"model {path} does not exist", "Give a bundle (tron export) or a run dir (tron train)")
    document, kind = read_model_dir(path)
    if kind == "bundle":
        scorer, document, kind = load_scorer(path, device)
        table = read_items(path / "items.parquet")
        event_types = tuple(document.get("event_types", ["clicks"]))
        expected = document.get("n_items")
    else:
        trained = document.get("dataset", {})
        dataset = read_dataset(Path(trained.get("path", "")))
        if dataset.info.get("catalogue_sha256") != trained.get("catalogue_sha256"):  # before the weights: says what to do
            raise ArtifactError(
                f"the dataset of {path} changed since it was trained ({dataset.path})", "Recommend from a bundle made when the run finished (tron export)"
            )
        scorer, document, kind = load_scorer(path, device)
        table = dataset.items()
        event_types = tuple(dataset.info.get("parameters", {}).get("event_types", ["clicks"]))
        expected = dataset.n_items
    model = scorer.model
    if table.num_rows != model.n_items or expected != model.n_items:
        raise ArtifactError(f"{path}: the model scores {model.n_items} items but its catalogue has {table.num_rows}", "Re-run: tron export")
    section = document.get("index") if kind == "bundle" else None
    index = None
    if index_params and (exact or not isinstance(section, dict)):
        raise UsageError("--index-param tunes an item index, but " + ("--exact scores without one" if exact else f"{path} has none"), "Drop --index-param")
    if isinstance(section, dict) and not exact:
        kind_name = str(section.get("kind"))
        search = parse_params(index_params, INDEXES.get(kind_name).search if kind_name in INDEXES else {}, kind_name, "--index-param")
        if any(value < 1 for value in search.values()):
            raise UsageError("--index-param: search parameters must be at least 1")
        index = load_index(path, section, n_items=model.n_items, d=model.output_size, search=search)
    return Predictor(
        Catalogue(table),
        event_types=event_types,
        path=path,
        kind=kind,
        document=document,
        retriever=Retriever(scorer, index),
        device=torch.device(device),
    )
