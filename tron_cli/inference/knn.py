"""Session kNN over the train split: the `sknn` and `vsknn` baselines' scores, and a blend of the scorer.

Among the `sample_size` most recent train sessions that share an item with the session so far, the `k` most
similar vote for their items with their similarity (Jannach & Ludewig, RecSys 2017): `sknn` by the cosine of the
two item sets, `vsknn` (Ludewig & Jannach, UMUAI 2018) by the overlap with the session's clicks weighted by
recency, 1/i for the i-th most recent (`decay div`) or 1 - 0.1 (i - 1), at least 0.1 (`decay linear`). Everything
is sparse tensor work over the session x item incidence of the train split on the scoring device.

As a blend (`tron train --knn-weight K`), an item scores K x its votes / the row's largest vote, so that K means
the same whatever the number of neighbours. The incidence travels with a run and its bundle in `knn.safetensors`
(each train session's distinct items, sorted, and their offsets).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tron_cli.artifacts.sessions import Sessions
from tron_cli.artifacts.tensors import load_tensors, read_tensor_header, save_tensors
from tron_cli.batching import owned_ranges
from tron_cli.errors import ArtifactError
from tron_cli.inference.blends import Bonus, Context

FILE = "knn.safetensors"
SIMILARITIES = {"sknn": None, "vsknn": "div"}  # a blend's similarity -> the recency decay it weighs clicks with
NEIGHBOURS, SAMPLE_SIZE = 100, 500  # the baselines' published defaults, and the blend's


@dataclass(frozen=True)
class Neighbours:
    """The train sessions' distinct items (`offsets` (S+1,), `items` (E,) sorted within a session, sessions in time
    order), the blend's weight and similarity, and the index from items back to their sessions."""

    offsets: Tensor
    items: Tensor
    n_items: int
    weight: float = 1.0
    similarity: str = "sknn"
    k: int = NEIGHBOURS
    sample_size: int = SAMPLE_SIZE
    kind: str = "knn"
    # derived: the sessions of each item, oldest first (item_offsets (N+2,), item_sessions (E,)), and session sizes
    item_offsets: Tensor = field(init=False, repr=False)
    item_sessions: Tensor = field(init=False, repr=False)
    sizes: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        sizes = self.offsets[1:] - self.offsets[:-1]
        session = torch.repeat_interleave(torch.arange(len(sizes), device=sizes.device), sizes)
        by_item = torch.argsort(self.items * max(1, len(sizes)) + session)
        counts = torch.bincount(self.items, minlength=self.n_items + 1)
        object.__setattr__(self, "item_offsets", torch.cat([torch.zeros(1, dtype=torch.long, device=sizes.device), torch.cumsum(counts, 0)]))
        object.__setattr__(self, "item_sessions", session[by_item])
        object.__setattr__(self, "sizes", sizes)

    @classmethod
    def counted(cls, train: Sessions, n_items: int, device: torch.device | str = "cpu", **settings: Any) -> Neighbours:
        """The incidence of the `train` sessions (their distinct items) on `device`, with the blend's `settings`."""
        lengths = torch.from_numpy(np.diff(train.offsets)).to(device)
        session = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)
        pairs = torch.unique(session * (n_items + 1) + torch.from_numpy(train.items.astype(np.int64)).to(device))  # sorted by session, item
        sizes = torch.bincount(pairs // (n_items + 1), minlength=len(lengths))
        offsets = torch.cat([torch.zeros(1, dtype=torch.long, device=device), torch.cumsum(sizes, 0)])
        return cls(offsets, pairs % (n_items + 1), n_items=n_items, **settings)

    def reweighted(self, weight: float) -> Neighbours:
        return replace(self, weight=weight)

    def to(self, device: torch.device | str) -> Neighbours:
        return replace(self, offsets=self.offsets.to(device), items=self.items.to(device))

    def section(self) -> dict[str, Any]:
        return {"kind": self.kind, "weight": self.weight, "similarity": self.similarity, "k": self.k, "sample_size": self.sample_size, "file": FILE}

    def part(self, context: Context) -> Bonus:
        """Each row's votes divided by its largest vote, in (0, 1]."""
        votes = self.votes(context, SIMILARITIES[self.similarity])
        largest = torch.zeros(len(context), dtype=torch.float64, device=votes.values.device)
        largest = largest.scatter_reduce(0, votes.rows, votes.values, "amax", include_self=False)
        return Bonus(votes.rows, votes.items, votes.values / largest[votes.rows])

    def votes(self, context: Context, decay: str | None) -> Bonus:
        """The summed similarity of each row's neighbours that hold an item: unique (row, item) pairs, sorted, float64."""
        n, q, device = self.n_items, len(context), self.items.device
        n_sessions = len(self.sizes)
        if len(context.rows) == 0 or n_sessions == 0:
            return Bonus.empty(device)
        weight = recency_weight(context.recency, decay)
        # distinct items per row, each with the weight of its most recent click
        unique, inverse = torch.unique(context.rows * (n + 1) + context.items, return_inverse=True)
        item_weight = torch.zeros(len(unique), dtype=torch.float64, device=device).scatter_reduce(0, inverse, weight, "amax", include_self=False)
        rows, items = unique // (n + 1), unique % (n + 1)
        distinct = torch.bincount(rows, minlength=q)
        # candidates: the most recent `sample_size` train sessions of each item (the most recent sessions that
        # share any item of the row are among them), with the row's weight of that item
        counts = (self.item_offsets[items + 1] - self.item_offsets[items]).clamp(max=self.sample_size)
        owner, index = owned_ranges(self.item_offsets[items + 1] - counts, counts)
        candidate = rows[owner] * n_sessions + self.item_sessions[index]
        pairs, inverse = torch.unique(candidate, return_inverse=True)  # sorted by row, then session (time)
        overlap = torch.zeros(len(pairs), dtype=torch.float64, device=device).index_add_(0, inverse, item_weight[owner])
        pair_rows, pair_sessions = pairs // n_sessions, pairs % n_sessions
        # keep each row's `sample_size` most recent candidates (the last ones of its run)
        row_end = torch.searchsorted(pairs, (pair_rows + 1) * n_sessions)
        recent = row_end - torch.arange(len(pairs), device=device) <= self.sample_size
        pair_rows, pair_sessions, overlap = pair_rows[recent], pair_sessions[recent], overlap[recent]
        if decay is None:  # cosine of two item sets
            similarity = overlap / torch.sqrt(distinct[pair_rows].double() * self.sizes[pair_sessions].double())
        else:  # the recency-weighted overlap
            similarity = overlap
        # the k most similar per row: a (Q, sample_size) table of each row's candidates
        row_start = torch.searchsorted(pair_rows, torch.arange(q, device=device))
        slot = torch.arange(len(pair_rows), device=device) - row_start[pair_rows]
        table = torch.full((q, self.sample_size), -1.0, dtype=torch.float64, device=device)
        table[pair_rows, slot] = similarity
        best, where = torch.topk(table, min(self.k, self.sample_size), dim=1)
        chosen = best > 0
        neighbour_rows = torch.arange(q, device=device)[:, None].expand_as(where)[chosen]
        neighbours = torch.full((q, self.sample_size), -1, dtype=torch.long, device=device)
        neighbours[pair_rows, slot] = pair_sessions
        neighbour_sessions, neighbour_similarity = torch.gather(neighbours, 1, where)[chosen], best[chosen]
        # each neighbour votes its similarity for each of its items
        starts = self.offsets[neighbour_sessions]
        owner, index = owned_ranges(starts, self.offsets[neighbour_sessions + 1] - starts)
        voted, inverse = torch.unique(neighbour_rows[owner] * (n + 1) + self.items[index], return_inverse=True)
        values = torch.zeros(len(voted), dtype=torch.float64, device=device).index_add_(0, inverse, neighbour_similarity[owner])
        return Bonus(voted // (n + 1), voted % (n + 1), values)


def recency_weight(recency: Tensor, decay: str | None) -> Tensor:
    """Weight of a click that is the `recency`-th most recent (1 = the last one)."""
    recency = recency.double()
    if decay is None:
        return torch.ones_like(recency)
    if decay == "div":
        return 1.0 / recency
    return (1.0 - 0.1 * (recency - 1.0)).clamp(min=0.1)


def save(path: Path, neighbours: Neighbours, catalogue: str | None) -> None:
    metadata = {"tron.catalogue_sha256": catalogue} if catalogue else {}
    save_tensors(path, {"offsets": neighbours.offsets.cpu().contiguous(), "items": neighbours.items.cpu().contiguous()}, metadata=metadata)


def load(path: Path, kind: str, n_items: int, settings: dict[str, Any], device: torch.device | str = "cpu") -> Neighbours:
    """The train incidence of a run or bundle, its tensors checked by name, dtype and range."""
    header = read_tensor_header(path, kind)
    shapes = {name: tuple(header.tensors.get(name, ((0,), ""))[0]) for name in ("offsets", "items")}
    tensors = load_tensors(path, kind, {name: (shape, torch.int64) for name, shape in shapes.items()})
    offsets, items = tensors["offsets"], tensors["items"]
    valid = (
        len(shapes["offsets"]) == 1
        and len(shapes["items"]) == 1
        and len(offsets) >= 1
        and int(offsets[0]) == 0
        and int(offsets[-1]) == len(items)
        and bool((offsets[1:] >= offsets[:-1]).all())
        and (len(items) == 0 or (int(items.min()) >= 1 and int(items.max()) <= n_items))
    )
    if not valid:
        raise ArtifactError(
            f"{path} does not hold train sessions of {n_items} items (offsets from 0 to its items, ids 1..{n_items})", "Re-run the command that made it"
        )
    return Neighbours(offsets, items, n_items=n_items, **settings).to(device)
