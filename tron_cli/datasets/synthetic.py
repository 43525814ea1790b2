"""A synthetic click log in OTTO's raw format, with OTTO's shape and a sequential structure worth learning.

- items: Zipf-like popularity (exponent 1.05) over `items` raw aids 0..items-1, grouped into clusters of
  about 25 items; every item has one fixed successor in its cluster;
- sessions: lengths 2 + lognormal (median 6, mean about 16.7 as OTTO, clipped at 500 events); start times uniform
  over five weeks from 2022-08-01 (OTTO's start), gaps exponential with a 60 s mean; the first four weeks
  are `train.jsonl`, sessions starting in the fifth are `test.jsonl` (train sessions are cut at the boundary);
- each next click, after a first one drawn by popularity: 45 % the successor of the previous item, 25 % an
  item of the session's theme (the first item's cluster) by popularity, 15 % a re-click of an earlier item
  of the session, 15 % a globally popular item. So order matters (successors), so does context (theme,
  re-clicks), and popularity alone is a weak predictor;
- event types: 90 % clicks, the rest carts and orders of items clicked earlier in the session: each item has
  a fixed buy propensity (most items low, a few high), and an event that is not a click turns a random earlier
  click's item into an order with that item's propensity, else into a cart (about 8 % carts, 2 % orders). So
  which clicked items get ordered depends on the items, and a second objective has something to learn.

With `days` (`tron download synthetic --days 14 --churn 40`) it writes a daily log instead, `day-001.jsonl` ...,
one file per day, over a catalogue with churn: each day some items retire and new ones are born, promoted on
their first days (`generate_days`); `tron preprocess --train day-014.jsonl` reads a day (or several, concatenated).

The same arguments give the same bytes: every draw comes from numpy generators seeded with `seed`.
The files are OTTO's format, so `tron preprocess synthetic` reads them with the OTTO reader and preset.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np  # imported with the registry (about 0.1 s); polars waits until something is written

from tron_cli.datasets import DATASETS, DatasetSpec, Parameter, Preset, read_otto_jsonl
from tron_cli.errors import UsageError
from tron_cli.memory import available_bytes, refuse_beyond
from tron_cli.reporting import SILENT, Reporter

if TYPE_CHECKING:
    import polars as pl

START_MS = 1_659_304_800_000  # 2022-08-01 00:00 Europe/Berlin, when OTTO's log starts
WEEK_MS = 7 * 24 * 3600 * 1000
MAX_LENGTH = 500
CLUSTER_SIZE = 25
TYPES = np.array(["clicks", "carts", "orders"])
CHUNK_SESSIONS = 200_000
DAY_MS = 24 * 3600 * 1000
LAUNCH_BOOST = 4.0  # a daily log's new item is 1 + 4 times as popular as its rank on its first day, 1 + 2 on its second, ...
DAILY_STREAM = 2  # keys a daily log's generator apart from the five weeks' (seed alone)


class _Catalogue:
    """Item popularity, clusters and successors, and vectorised draws from them; `ids` are the items' raw aids."""

    def __init__(self, n_items: int, rng: np.random.Generator):
        rank = rng.permutation(n_items)
        n_clusters = max(1, n_items // CLUSTER_SIZE)
        self._index((rank + 1.0) ** -1.05, cluster=rng.integers(0, n_clusters, n_items), n_clusters=n_clusters)
        self.successor = self.in_cluster(self.cluster, rng.random(n_items))
        self.ids = np.arange(n_items, dtype=np.int64)

    @classmethod
    def of(cls, ids: np.ndarray, popularity: np.ndarray, cluster: np.ndarray, n_clusters: int) -> _Catalogue:
        """The items `ids` with unnormalised `popularity` and `cluster`s (their successors are set by the caller)."""
        catalogue = cls.__new__(cls)
        catalogue._index(popularity, cluster=cluster, n_clusters=n_clusters)
        catalogue.ids = ids
        return catalogue

    def _index(self, popularity: np.ndarray, cluster: np.ndarray, n_clusters: int) -> None:
        self.popularity = popularity / popularity.sum()
        self.global_cdf = np.cumsum(self.popularity)
        self.cluster = cluster
        # items sorted by cluster; within each cluster a CDF shifted by the cluster index, so that one
        # searchsorted over the whole array draws from any cluster: item = sorted[searchsorted(cdf, c + u)]
        self.by_cluster = np.argsort(self.cluster, kind="stable")
        weights = self.popularity[self.by_cluster]
        clusters_sorted = self.cluster[self.by_cluster]
        totals = np.bincount(clusters_sorted, weights=weights, minlength=n_clusters)
        within = np.cumsum(weights) - np.concatenate([[0.0], np.cumsum(totals)[:-1]])[clusters_sorted]
        self.cluster_cdf = clusters_sorted + within / np.maximum(totals[clusters_sorted], 1e-300)

    def popular(self, u: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(self.global_cdf, u * self.global_cdf[-1]), len(self.popularity) - 1)

    def in_cluster(self, clusters: np.ndarray, u: np.ndarray) -> np.ndarray:
        index = np.searchsorted(self.cluster_cdf, clusters + u * (1 - 1e-12))
        return self.by_cluster[np.minimum(index, len(self.by_cluster) - 1)]


def _session_items(catalogue: _Catalogue, lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Items of sessions with `lengths` (sorted descending), as a (S, max_len) array, 0-padded on the right."""
    n, width = len(lengths), int(lengths[0])
    items = np.zeros((n, width), dtype=np.int64)
    items[:, 0] = catalogue.popular(rng.random(n))
    theme = catalogue.cluster[items[:, 0]]
    for t in range(1, width):
        active = int(np.searchsorted(-lengths, -t, side="left"))  # sessions with length > t form a prefix
        choice = rng.random(active)
        u = rng.random(active)
        previous = items[:active, t - 1]
        step = catalogue.successor[previous]
        themed = choice >= 0.45
        step[themed] = catalogue.in_cluster(theme[:active][themed], u[themed])
        reclick = choice >= 0.70
        earlier = (u[reclick] * t).astype(np.int64)
        step[reclick] = items[:active][reclick, earlier]
        popular = choice >= 0.85
        step[popular] = catalogue.popular(u[popular])
        items[:active, t] = step
    return items


def generate(out_dir: Path, sessions: int, items: int, seed: int, days: int = 0, churn: int = 0, report: Reporter = SILENT) -> list[Path]:
    """Write `train.jsonl` and `test.jsonl` (OTTO format) with `sessions` sessions over `items` items into `out_dir`;
    with `days`, a daily log instead (`generate_days`)."""
    if churn and not days:
        raise UsageError("--churn sets the items born and retired each day of a daily log: give --days too")
    # about a dozen 8-byte arrays per item, a few per session, one chunk of sessions being written at a time, and a
    # daily log's file names
    total = items + max(days - 1, 0) * churn
    needed = 100 * total + 40 * sessions + 1_000 * min(sessions, CHUNK_SESSIONS) * 17 + 200 * days
    refuse_beyond(
        f"generating {sessions:,} sessions over {total:,} items", needed=needed, available=available_bytes(), hint="Ask for fewer --items or --sessions"
    )
    if days:
        return generate_days(out_dir, sessions=sessions, items=items, seed=seed, days=days, churn=churn, report=report)
    import polars as pl

    rng = np.random.default_rng(seed)
    catalogue = _Catalogue(items, rng)
    # carts and orders draw from a generator of their own, so that the clicks are what they always were
    buys = np.random.default_rng([seed, 1])
    propensity = buys.beta(0.3, 1.2, items)  # mean 0.2: most items rarely bought, a few often
    starts = np.sort(rng.integers(0, 5 * WEEK_MS, sessions))
    lengths = np.minimum(2 + np.floor(np.exp(rng.normal(np.log(4.4), 1.6, sessions))), MAX_LENGTH).astype(np.int64)
    boundary = START_MS + 4 * WEEK_MS
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "train.jsonl", out_dir / "test.jsonl"]
    handles = [open(path, "wb") for path in paths]
    try:
        with report.task("generating sessions", total=sessions) as task:
            for first in range(0, sessions, CHUNK_SESSIONS):
                chunk = slice(first, min(first + CHUNK_SESSIONS, sessions))
                frame = _chunk_frame(
                    catalogue, np.arange(chunk.start, chunk.stop), starts=starts[chunk], lengths=lengths[chunk], rng=rng, propensity=propensity, buys=buys
                )
                is_test = frame["start"] >= boundary
                train = frame.filter(~is_test).with_columns(pl.col("events").list.filter(pl.element().struct.field("ts") < boundary))
                for handle, part in ((handles[0], train), (handles[1], frame.filter(is_test))):
                    part.select("session", "events").write_ndjson(handle)
                task.update(advance=chunk.stop - chunk.start)
    finally:
        for handle in handles:
            handle.close()
    return paths


def generate_days(out_dir: Path, sessions: int, items: int, seed: int, days: int, churn: int, report: Reporter = SILENT) -> list[Path]:
    """Write a daily log, `day-001.jsonl` ... (OTTO format, each day's sessions by their start), with item churn.

    Day 1 clicks `items` items; each later day `churn` of the items alive the day before retire (uniformly) and
    `churn` new ones are born (the next raw aids). An item's popularity is its Zipf rank's, times a launch boost
    that halves every day (new products are promoted: 1 + LAUNCH_BOOST on their first day); clusters are drawn
    once for every item, and an item whose successor retired gets a new one from its cluster that day. Sessions
    (`sessions` spread evenly over the days) are drawn as in `generate`, from the items alive that day."""
    if churn and churn >= items:
        raise UsageError(f"--churn {churn} retires at least every item each day: give fewer than --items {items}")
    rng = np.random.default_rng([seed, DAILY_STREAM])
    total = items + (days - 1) * churn
    popularity = (rng.permutation(total) + 1.0) ** -1.05
    n_clusters = max(1, items // CLUSTER_SIZE)
    cluster = rng.integers(0, n_clusters, total)
    born = np.concatenate([np.zeros(items, dtype=np.int64), np.repeat(np.arange(1, days), churn)])
    buys = np.random.default_rng([seed, 1])
    propensity = buys.beta(0.3, 1.2, total)
    successor = np.full(total, -1, dtype=np.int64)  # raw aid of each item's successor (-1: none yet)
    alive = born == 0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"day-{day + 1:03d}.jsonl" for day in range(days)]
    first_session = 0
    with report.task("generating sessions", total=sessions) as task:
        for day, path in enumerate(paths):
            if day:
                alive[rng.choice(np.flatnonzero(alive), churn, replace=False)] = False
                alive[born == day] = True
            ids = np.flatnonzero(alive)
            boost = 1 + LAUNCH_BOOST * 0.5 ** (day - born[ids])
            catalogue = _Catalogue.of(ids, popularity[ids] * boost, cluster=cluster[ids], n_clusters=n_clusters)
            orphans = ids[(successor[ids] < 0) | ~alive[successor[ids]]]
            successor[orphans] = ids[catalogue.in_cluster(cluster[orphans], rng.random(len(orphans)))]
            local = np.zeros(total, dtype=np.int64)
            local[ids] = np.arange(len(ids))
            catalogue.successor = local[successor[ids]]
            n = sessions // days + (day < sessions % days)
            starts = day * DAY_MS + np.sort(rng.integers(0, DAY_MS, n))
            lengths = np.minimum(2 + np.floor(np.exp(rng.normal(np.log(4.4), 1.6, n))), MAX_LENGTH).astype(np.int64)
            with open(path, "wb") as handle:
                for first in range(0, n, CHUNK_SESSIONS):
                    chunk = slice(first, min(first + CHUNK_SESSIONS, n))
                    frame = _chunk_frame(
                        catalogue,
                        first_session + np.arange(chunk.start, chunk.stop),
                        starts=starts[chunk],
                        lengths=lengths[chunk],
                        rng=rng,
                        propensity=propensity,
                        buys=buys,
                    )
                    frame.select("session", "events").write_ndjson(handle)
                    task.update(advance=chunk.stop - chunk.start)
            first_session += n
    return paths


def _chunk_frame(catalogue, session_ids, starts, lengths, rng, propensity, buys) -> pl.DataFrame:
    """One chunk of sessions as a frame (session, start, events: list of {aid, ts, type})."""
    import polars as pl

    order = np.argsort(-lengths, kind="stable")
    matrix = _session_items(catalogue, lengths[order], rng)
    unsorted = np.empty_like(matrix)
    unsorted[order] = matrix
    valid = np.arange(matrix.shape[1]) < lengths[:, None]
    aids = catalogue.ids[unsorted[valid]]  # row-major: session by session, in click order
    gaps = rng.exponential(60_000.0, len(aids)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ts = np.cumsum(gaps)
    ts = ts - np.repeat(ts[offsets[:-1]], lengths) + np.repeat(START_MS + starts, lengths)
    types = TYPES[np.searchsorted([0.90, 0.98], rng.random(len(aids)), side="right")]
    aids, types = _buys(aids, types, offsets=offsets, propensity=propensity, rng=buys)
    events = pl.DataFrame({"aid": aids, "ts": ts, "type": types}).select(pl.struct("aid", "ts", "type").alias("e"))
    grouped = (
        events.with_columns(pl.Series("session", np.repeat(session_ids, lengths))).group_by("session", maintain_order=True).agg(pl.col("e").alias("events"))
    )
    return grouped.with_columns(pl.Series("start", START_MS + starts))


def _buys(aids: np.ndarray, types: np.ndarray, offsets: np.ndarray, propensity: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each event that is not a click takes the item of a random earlier click of its session, and becomes an
    order with that item's propensity, else a cart; one without an earlier click keeps its item and type."""
    lengths = np.diff(offsets)
    position = np.arange(len(aids)) - np.repeat(offsets[:-1], lengths)  # index in the session
    is_click = types == "clicks"
    clicks_before = np.cumsum(is_click) - is_click - np.repeat((np.cumsum(is_click) - is_click)[offsets[:-1]], lengths)
    other = np.flatnonzero(~is_click & (clicks_before > 0) & (position > 0))
    pick = (rng.random(len(other)) * clicks_before[other]).astype(np.int64)  # the pick-th click before it
    click_positions = np.flatnonzero(is_click)
    first_click = np.searchsorted(click_positions, np.repeat(offsets[:-1], lengths)[other])
    chosen = aids[click_positions[first_click + pick]]
    aids, types = aids.copy(), types.copy()
    aids[other] = chosen
    types[other] = np.where(rng.random(len(other)) < propensity[chosen], "orders", "carts")
    return aids, types


SYNTHETIC = DatasetSpec(
    name="synthetic",
    summary="A click log in OTTO's format, generated here (no network).",
    generate=generate,
    parameters=(
        Parameter("sessions", 20000, "number of sessions.", minimum=1),
        Parameter("items", 2000, "number of items.", minimum=1),
        Parameter("seed", 0, "random seed.", minimum=0),
        Parameter("days", 0, "days of a daily log, day-001.jsonl ... (0: five weeks as train.jsonl and test.jsonl).", minimum=0),
        Parameter("churn", 0, "items born and as many retired each day of a daily log (--days).", minimum=0),
    ),
    preset=Preset(
        train_file="train.jsonl",
        test_file="test.jsonl",
        split_on="first",
        test_days=None,
        floor_to_day=False,
        min_item_support=1,
        valid_days=7,
    ),
    format="otto-jsonl",
    read=read_otto_jsonl,
)

DATASETS.register(SYNTHETIC.name, SYNTHETIC)
