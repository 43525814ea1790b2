"""An item index: the model's output items in a faiss index that finds a state's best-scoring items fast.

A score is the inner product h · w + b of a state h with an item's output vector w and bias b (`models/base.py`).
The index holds x = [w, b] for every item and is searched with q = [h, 1], so that q · x is the item's score and
a maximum-inner-product search (faiss's METRIC_INNER_PRODUCT) finds the best-scoring items. Faiss ids are dense
ids - 1. (The other classic route, turning MIPS into L2 search with one more coordinate sqrt(M² - |x|²), was
measured and dropped: on a trained SASRec whose item norms vary by 2x that coordinate dominates the geometry, and
HNSW at ef_search 128 found 0.81 of the exact top-20 against 1.00 with inner products.)

The index only proposes candidates: `retrieval.py` fetches more than k of them, scores each exactly with the
model and keeps the best k, so every returned score is the exact one and only the choice of candidates is
approximate. Kinds (`INDEXES`):

| kind  | faiss           | build parameters                       | search knob (speed <-> recall)            |
|-------|-----------------|----------------------------------------|-------------------------------------------|
| exact | Flat            | none                                   | none: brute force, the exact top-k        |
| hnsw  | HNSW{m},Flat    | m (links per node), ef_construction    | ef_search: candidates kept while walking  |
| ivf   | IVF{nlist},Flat | nlist (clusters, 0 = 4 sqrt(N))        | nprobe: clusters scanned per query        |
| ivf-fp16 | IVF{nlist},SQfp16 | as ivf                              | as ivf                                    |

ivf-fp16 stores each coordinate in 16 bits: half the memory and half the bytes a query scans, which is what an IVF
query's time is at 1.8M items (0.40 -> 0.29 ms a query on one core, 0.25 -> 0.16 on two; the top-40 it proposes
is 98 % of ivf's). faiss scans such codes 8 coordinates at a time only: its points carry zeros up to a multiple
of 8 coordinates (`IndexKind.align`), without which the scan falls back to scalar code, 4x slower.

The file is faiss's own binary format (`faiss.write_index`, no pickle), written beside `model.safetensors`;
its parameters go to the bundle's config.json. faiss is imported only when an index is built or read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tron_cli.errors import ArtifactError, TronError, UsageError
from tron_cli.registry import Registry

INDEX_FILE = "index.faiss"
TRAIN_POINTS_PER_CLUSTER = 64  # k-means of an IVF index trains on at most this many items per cluster (seeded sample)
MIN_POINTS_PER_CLUSTER = 39  # faiss warns below this many training points per cluster: auto nlist stays above it


def require_faiss():
    """The faiss module, or a one-line error naming the extra to install."""
    try:
        import faiss
    except ImportError:
        raise TronError("an item index needs faiss", "pip install 'tron-cli[serve]' (faiss-cpu), or use exact scoring") from None
    return faiss


@dataclass(frozen=True)
class IndexKind:
    """One kind of index: its faiss factory string, its parameters with their defaults, how its search is tuned."""

    summary: str
    build: Mapping[str, int]  # build parameters and their defaults
    search: Mapping[str, int]  # search parameters (the speed/recall knob) and their defaults
    factory: Callable[[dict[str, int]], str]  # resolved build parameters -> faiss.index_factory string
    tune: Callable[[Any, dict[str, int]], None]  # apply search parameters to a loaded index
    align: int = 1  # points and queries carry zeros up to a multiple of this many coordinates

    def width(self, d: int) -> int:
        """Coordinates of the points of a model with `d` hidden units: [w, b], then zeros up to `align`."""
        return -(-(d + 1) // self.align) * self.align

    def resolve_build(self, given: Mapping[str, int], n_items: int) -> dict[str, int]:
        resolved = {**self.build, **given}
        if "nlist" in resolved and resolved["nlist"] == 0:
            resolved["nlist"] = auto_nlist(n_items)
        return resolved


def auto_nlist(n_items: int) -> int:
    """4 sqrt(N) clusters, but never fewer than MIN_POINTS_PER_CLUSTER items per cluster."""
    return max(1, min(round(4 * math.sqrt(n_items)), n_items // MIN_POINTS_PER_CLUSTER))


def _tune_hnsw(index, search: dict[str, int]) -> None:
    index.hnsw.efSearch = search["ef_search"]


def _tune_ivf(index, search: dict[str, int]) -> None:
    index.nprobe = min(search["nprobe"], index.nlist)


INDEXES: Registry[IndexKind] = Registry("index kind")
INDEXES.register(
    "exact", IndexKind("brute force in faiss: the exact top-k, as a reference", {}, search={}, factory=lambda build: "Flat", tune=lambda index, search: None)
)
INDEXES.register(
    "hnsw",
    IndexKind(
        "a navigable small-world graph: fast queries, slow to build on large catalogues",
        {"m": 32, "ef_construction": 128},
        search={"ef_search": 128},
        factory=lambda build: f"HNSW{build['m']},Flat",
        tune=_tune_hnsw,
    ),
)
IVF = IndexKind(
    "k-means clusters scanned in full: quick to build, memory as the vectors",
    {"nlist": 0},
    search={"nprobe": 32},
    factory=lambda build: f"IVF{build['nlist']},Flat",
    tune=_tune_ivf,
)
INDEXES.register("ivf", IVF)
INDEXES.register(
    "ivf-fp16",
    replace(
        IVF,
        summary="ivf with 16-bit coordinates: half the memory, and of the bytes a query scans",
        factory=lambda build: f"IVF{build['nlist']},SQfp16",
        align=8,
    ),
)


def parse_params(pairs: tuple[str, ...] | list[str], allowed: Mapping[str, int], kind: str, option: str) -> dict[str, int]:
    """NAME=VALUE strings -> {name: int}; unknown names and values that are not non-negative integers are usage errors."""
    out: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"{option} {pair!r} needs a value: NAME=VALUE", f"For example {option} {name or next(iter(allowed), 'NAME')}=64")
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise UsageError(f"{option} {pair!r}: index kind {kind!r} has no parameter {name!r}", f"Its parameters: {known} (NAME=VALUE)")
        if not value.isdigit():
            raise UsageError(f"{option} {pair!r}: the value must be a non-negative integer")
        out[name] = int(value)
    return out


def item_points(table: np.ndarray, bias: np.ndarray | None, width: int | None = None) -> np.ndarray:
    """(N, width) float32 points x = [w, b, 0...] of items 1..N from their (N, d) output vectors and (N,) biases
    (None: 0); width d + 1 by default."""
    d = table.shape[1]
    points = np.zeros((table.shape[0], width or d + 1), dtype=np.float32)
    points[:, :d] = table
    if bias is not None:
        points[:, d] = bias
    return points


def query_points(hidden: np.ndarray, width: int | None = None) -> np.ndarray:
    """(Q, d) states -> (Q, width) float32 queries q = [h, 1, 0...]; width d + 1 by default."""
    d = hidden.shape[1]
    queries = np.zeros((hidden.shape[0], width or d + 1), dtype=np.float32)
    queries[:, :d] = hidden
    queries[:, d] = 1.0
    return queries


def build_index(table: np.ndarray, bias: np.ndarray | None, kind: str, given: Mapping[str, int], search: Mapping[str, int], seed: int = 0):
    """(faiss index, config.json section) of items 1..N with output vectors `table` (N, d) and biases `bias` (N,)."""
    faiss = require_faiss()
    spec = INDEXES.get(kind, "--index")
    build = spec.resolve_build(given, table.shape[0])
    if "nlist" in build and not 1 <= build["nlist"] <= table.shape[0]:
        raise UsageError(f"--index-param nlist={build['nlist']}: an IVF index of {table.shape[0]} items needs 1 to {table.shape[0]} clusters")
    if "m" in build and build["m"] < 2:
        raise UsageError("--index-param m must be at least 2")
    started = time.perf_counter()
    points = item_points(table, bias, spec.width(table.shape[1]))
    index = faiss.index_factory(points.shape[1], spec.factory(build), faiss.METRIC_INNER_PRODUCT)
    if "ef_construction" in build:
        index.hnsw.efConstruction = build["ef_construction"]
    if not index.is_trained:
        wanted = min(len(points), TRAIN_POINTS_PER_CLUSTER * build.get("nlist", 1))
        sample = np.sort(np.random.default_rng(seed).choice(len(points), wanted, replace=False))
        index.train(points[sample])
    index.add(points)
    section = {
        "kind": kind,
        "file": INDEX_FILE,
        "library": f"faiss {faiss.__version__}",
        "factory": spec.factory(build),
        "metric": "inner product of items [w, b] with queries [h, 1]: the item's score",
        "dimension": points.shape[1],
        "n_items": int(table.shape[0]),
        "build": build,
        "search": {**spec.search, **search},
        "seed": seed,
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    return index, section


def write_index(index, path: Path) -> None:
    require_faiss().write_index(index, str(path))


class ItemIndex:
    """A loaded index: `candidates(hidden, fetch)` proposes each state's best items by the index's distance."""

    def __init__(self, index, section: dict[str, Any], search: dict[str, int]):
        self.index = index
        self.section = section
        self.kind = section["kind"]
        self.search_params = search
        INDEXES.get(self.kind).tune(index, search)

    def describe(self) -> str:
        knobs = ", ".join(f"{name}={value}" for name, value in self.search_params.items())
        return f"{self.kind} index ({self.section['factory']}{', ' + knobs if knobs else ''})"

    def candidates(self, hidden: np.ndarray, fetch: int) -> np.ndarray:
        """(Q, d) fp32 states -> (Q, fetch) int64 dense ids, nearest first; 0 where the index found fewer."""
        _, labels = self.index.search(query_points(hidden, self.index.d), fetch)
        return labels + 1  # faiss answers -1 for a missing neighbour: 0, the padding id


def load_index(bundle: Path, section: Mapping[str, Any], n_items: int, d: int, search: Mapping[str, int] | None = None) -> ItemIndex:
    """The bundle's index (its file already checked against its sha256), tuned with the config's search
    parameters overridden by `search`."""
    faiss = require_faiss()
    kind = str(section.get("kind"))
    if kind not in INDEXES:
        raise ArtifactError(f"{bundle}/config.json: unknown index kind {kind!r}", "Re-run: tron export --index KIND --force with this version of tron")
    path = bundle / str(section.get("file", INDEX_FILE))
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
        raise ArtifactError(f"{path} is not a readable faiss index ({first})", "Re-run: tron export --index KIND --force") from None
    spec = INDEXES.get(str(kind))
    if index.ntotal != n_items or index.d != spec.width(d) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ArtifactError(
            f"{path} holds {index.ntotal} items of dimension {index.d}, the model {n_items} of dimension {spec.width(d)} (and inner products)",
            "Re-run: tron export --index KIND --force",
        )
    tuned = {**spec.search, **{k: int(v) for k, v in dict(section.get("search") or {}).items() if k in spec.search}, **dict(search or {})}
    return ItemIndex(index, dict(section), tuned)
