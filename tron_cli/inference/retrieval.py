"""The top-k items of a batch of states, exactly or through an item index, with exclusions and allow/deny lists.

Exact: every item of the catalogue is scored (`scoring.top_items`, the deny list masked in each chunk), or,
with an allow list, only the allowed items (`scoring.top_among`, which costs the list's size, not the
catalogue's). Through an index (`index.py`): each state asks the index for `fetch` candidates, more than k
(OVERFETCH x k, plus room for the row's excluded items and the deny list, up to FETCH_CAP; scaled by
N / |allow| with an allow list), scores each candidate exactly, drops the excluded, denied and not-allowed
ones and keeps the best k. A row left with fewer than k items while the catalogue could give more is answered
exactly instead (`fallbacks` counts them), so filters never shorten an answer; only the choice of candidates
is approximate, never a score. A scorer with blends (`scorer.py`: the transition prior, session kNN, repeats)
adds to every row's candidates the `fetch` items its blends score highest, which the index (the network's
vectors) cannot know of. Shared by `tron recommend`, `tron evaluate --retrieval index` and the server.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tron_cli.inference.blends import Context
from tron_cli.inference.index import ItemIndex
from tron_cli.inference.scorer import Scorer
from tron_cli.inference.scoring import Pairs, top_among, top_items
from tron_cli.runtime import exact_fp32

OVERFETCH = 2  # candidates fetched per wanted item, before room for exclusions
FETCH_CAP = 1024  # beyond this many candidates a row is answered exactly instead


@dataclass(frozen=True)
class Filters:
    """Items an answer may hold (allow, None = all) and may not (deny): sorted distinct dense ids."""

    allow: np.ndarray | None = None
    deny: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return self.allow is None and (self.deny is None or len(self.deny) == 0)

    def universe(self, n_items: int) -> int:
        """How many items an answer can hold at most (before a row's own exclusions)."""
        if self.allow is not None:
            return len(self.candidates())
        return n_items - (0 if self.deny is None else len(self.deny))

    def candidates(self) -> np.ndarray:
        """The allowed items that are not denied (only with an allow list)."""
        assert self.allow is not None
        return self.allow if self.deny is None else np.setdiff1d(self.allow, self.deny, assume_unique=True)


NO_FILTERS = Filters()


def filters_from_dense(allow: np.ndarray | None, deny: np.ndarray | None) -> Filters:
    """Filters from dense ids (0 = unknown raw id, dropped)."""

    def clean(ids: np.ndarray | None) -> np.ndarray | None:
        return None if ids is None else np.unique(np.asarray(ids, dtype=np.int64)[np.asarray(ids) > 0])

    return Filters(clean(allow), clean(deny))


class Retriever:
    """Top-k of states against a scorer's catalogue; through `index` when given, else exact."""

    def __init__(self, scorer: Scorer, index: ItemIndex | None = None):
        self.scorer = scorer
        self.index = index
        self.fallbacks = 0  # rows answered exactly because the index's candidates did not leave k items

    @property
    def mode(self) -> str:
        return "exact" if self.index is None else self.index.describe()

    @torch.no_grad()
    def top(
        self, hidden: Tensor, k: int, excluded: Pairs | None = None, filters: Filters = NO_FILTERS, context: Context | None = None
    ) -> tuple[Tensor, Tensor]:
        """(scores (Q, k) fp32 best first, dense ids (Q, k)) for states (Q, d) of sessions `context` (read by the
        scorer's blends); slots that no item can fill (everything excluded or filtered) have score -inf and id 0."""
        k = min(k, self.scorer.n_items)
        if self.index is None or hidden.shape[0] == 0:
            return self.exact(hidden, k, excluded=excluded, filters=filters, context=context)
        return self._through_index(hidden, k, excluded=excluded, filters=filters, context=context)

    def exact(
        self, hidden: Tensor, k: int, excluded: Pairs | None = None, filters: Filters = NO_FILTERS, context: Context | None = None
    ) -> tuple[Tensor, Tensor]:
        device = hidden.device
        if filters.allow is not None:
            scores, ids = top_among(self.scorer, hidden, k=k, items=torch.from_numpy(filters.candidates()).to(device), excluded=excluded, context=context)
        else:
            banned = None
            if filters.deny is not None and len(filters.deny):
                banned = torch.zeros(self.scorer.n_items + 1, dtype=torch.bool, device=device)
                banned[torch.from_numpy(filters.deny).to(device)] = True
            scores, ids = top_items(self.scorer, hidden, k, excluded, banned=banned, context=context)
        return _pad(scores, ids, k)

    def _through_index(self, hidden: Tensor, k: int, excluded: Pairs | None, filters: Filters, context: Context | None) -> tuple[Tensor, Tensor]:
        assert self.index is not None
        device, n = hidden.device, self.scorer.n_items
        q = hidden.shape[0]
        per_row = torch.zeros(q, dtype=torch.long, device=device)  # distinct excluded items of each row that filters leave
        keys = None
        if excluded is not None:
            keys = torch.unique(excluded[0] * (n + 1) + excluded[1])  # sorted
            rows, items = keys // (n + 1), keys % (n + 1)
            in_scope = torch.ones_like(items, dtype=torch.bool)
            if filters.allow is not None:
                in_scope = torch.isin(items, torch.from_numpy(filters.candidates()).to(device))
            elif filters.deny is not None and len(filters.deny):
                in_scope = ~torch.isin(items, torch.from_numpy(filters.deny).to(device))
            per_row = torch.bincount(rows[in_scope], minlength=q)
        room = int(per_row.max()) + (0 if filters.deny is None else len(filters.deny))
        fetch = OVERFETCH * k + min(room, FETCH_CAP)
        if filters.allow is not None:
            fetch = int(np.ceil(fetch * n / max(1, filters.universe(n))))
        fetch = min(n, fetch, max(FETCH_CAP, OVERFETCH * k))
        hidden = hidden.float()
        candidates = torch.from_numpy(self.index.candidates(hidden.cpu().numpy(), fetch)).to(device)  # (Q, fetch)
        bonus = self.scorer.bonus(context)
        blended = self.scorer.candidates(bonus, q, fetch)
        if blended is not None:
            # the index knows the network's scores only: what the blends score highest in a row (the last click's
            # likeliest successors, the neighbours' items, the session's own) are candidates too, each once (a
            # repeat in a sorted row is dropped)
            candidates, _ = torch.sort(torch.cat([candidates, blended], 1), dim=1)
            repeated = torch.cat([torch.zeros_like(candidates[:, :1], dtype=torch.bool), candidates[:, 1:] == candidates[:, :-1]], 1)
            candidates = torch.where(repeated, 0, candidates)
        with exact_fp32():
            scores = self.scorer.items(hidden, candidates, bonus).float()  # (Q, fetch) exact
        drop = candidates == 0
        if keys is not None:
            drop |= torch.isin(torch.arange(q, device=device)[:, None] * (n + 1) + candidates, keys)
        if filters.deny is not None and len(filters.deny):
            drop |= torch.isin(candidates, torch.from_numpy(filters.deny).to(device))
        if filters.allow is not None:
            drop |= ~torch.isin(candidates, torch.from_numpy(filters.allow).to(device))
        scores = scores.masked_fill(drop | scores.isnan(), float("-inf"))  # a NaN score is the worst, never a win
        best, position = torch.topk(scores, min(k, fetch), dim=1)
        ids = torch.gather(candidates, 1, position)
        best, ids = _pad(best, ids, k)
        # rows short of k items that the catalogue could still fill: answer them exactly
        possible = (filters.universe(n) - per_row).clamp(min=0, max=k)
        short = (torch.isfinite(best).sum(1) < possible).nonzero().squeeze(1)
        if len(short):
            self.fallbacks += len(short)
            sub_excluded = None
            if excluded is not None:
                where = torch.full((q,), -1, dtype=torch.long, device=device)
                where[short] = torch.arange(len(short), device=device)
                keep = where[excluded[0]] >= 0
                sub_excluded = (where[excluded[0][keep]], excluded[1][keep])
            best[short], ids[short] = self.exact(
                hidden[short], k, excluded=sub_excluded, filters=filters, context=None if context is None else context.select(short)
            )
        return best, ids


def _pad(scores: Tensor, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(Q, k) results: missing columns, and ids of -inf slots, become (-inf, 0)."""
    if scores.shape[1] < k:
        extra = k - scores.shape[1]
        scores = torch.cat([scores, scores.new_full((scores.shape[0], extra), float("-inf"))], 1)
        ids = torch.cat([ids, ids.new_zeros((ids.shape[0], extra))], 1)
    return scores, torch.where(torch.isfinite(scores), ids, torch.zeros_like(ids))
