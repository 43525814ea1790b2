"""The serve stage: a bundle behind HTTP, with concurrent requests micro-batched through the model and the index.

FastAPI + uvicorn: the mainstream Python ASGI stack, with a test client for in-process tests and a server that
drains in-flight requests on SIGTERM. Endpoints:

- `POST /recommend`: `{"items": [...], "k": 20, "exclude_seen": false, "allow": [...], "deny": [...],
  "session": ANY, "order_weight": W}` answers `{"session", "items", "scores", "unknown_items"}`; `{"sessions":
  [{"items", "session", "order_weight"}, ...], ...}` answers `{"results": [...]}`. `order_weight` (a MultiTRON
  model only) is the preference [1 - W, W] between the next click and orders: a session's own, else the
  request's, else the server's `--order-weight`. Raw item ids in and out; unknown ids are skipped (and counted), a
  session with no known item gets the most popular items with `scores: null`, as `tron recommend` does.
- `GET /health`, `GET /metadata` (model, bundle, reloads, dataset, catalogue, index, limits, version), `GET /metrics`
  (Prometheus text: requests by path and status, latency, batch sizes, sessions, unknown ids, index fallbacks,
  reloads, the bundle served).
- `POST /admin/reload` (with `--admin-token`): reload the bundle now; answers when it is swapped in (200) or refused (409).

Bad requests never reach the model: malformed JSON (400), a body over `max_body_bytes` (413), unknown fields,
wrong types, ids the catalogue cannot hold, sessions longer than `max_session_length`, k out of 1..max_k, too
many sessions or filter ids (422) get `{"error": "<one line>"}`. The body is parsed as JSON whatever its
Content-Type (`curl -d` sends a form type).

Hot swap: SIGHUP, `POST /admin/reload` (only with `admin_token`, a bearer token compared in constant time) and
`watch` (the bundle path, e.g. a symlink, points at another bundle) load the bundle the path points at now in a
thread of its own, check it (sha256 of every file, the catalogue against the model, a warm-up query) and swap it
in (`Live`): a request is answered by the model it was parsed for, so requests in flight finish on the old one. A
bundle that fails is refused with a log line and counted, and the old one keeps serving. `/metadata` and
`/metrics` say which bundle is served and how many reloads worked and failed.

Micro-batching: requests wait in a queue; one worker takes the first and whatever arrives within
`batch_window_ms` (or is already waiting; the window is waited out only when other requests are on their way
or the last batch had several), up to `max_batch` sessions, runs the model once over all their
sessions (`Predictor.encode`), then the top-k of every request that asks the same (exclude_seen, no filters)
in one lookup with the largest k, and of each request with filters on its own (`Predictor.answer`). The work runs
in a thread, so the event loop keeps accepting requests while a batch is scored.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import hmac
import json
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import prometheus_client as prom
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, ValidationError

from tron_cli.choices import DEFAULT_ORDER_WEIGHT
from tron_cli.errors import TronError, UsageError
from tron_cli.inference.index import require_faiss
from tron_cli.inference.predictor import Predictor, load_predictor
from tron_cli.inference.retrieval import NO_FILTERS, Filters
from tron_cli.inference.session_input import INT64_RANGE, Batch, RecordProblem, raw_ids
from tron_cli.reporting import SILENT, Reporter
from tron_cli.safe_json import JsonRefused, parse
from tron_cli.version import __version__

PATHS = ("/recommend", "/health", "/metadata", "/metrics", "/admin/reload")
WATCH_SECONDS = 1.0  # how often --watch looks at the bundle path
RELOAD_NICENESS = 10  # a reload's thread runs at this nice value (Linux: per thread), below the threads that answer
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class ServeOptions:
    """How the server listens, batches and what it accepts."""

    host: str = "127.0.0.1"
    port: int = 8000
    batch_window_ms: float = 2.0  # how long the first request of a batch waits for others
    max_batch: int = 64  # sessions scored together at most (a larger request is scored alone)
    max_k: int = 1000
    max_session_length: int = 1000  # clicks in one session of a request
    max_sessions: int = 256  # sessions in one request
    max_filter_items: int = 100_000  # ids in one allow or deny list
    max_body_bytes: int = 1 << 20
    threads: int = 0  # CPU threads of the model and the index; 0: every core this process may use
    order_weight: float | None = None  # MultiTRON: the order weight of requests that give none (None: DEFAULT_ORDER_WEIGHT)
    admin_token: str | None = None  # POST /admin/reload answers only with this bearer token (None: the endpoint is off)
    watch: bool = False  # reload when the bundle path (a symlink, a directory replaced whole) points at another bundle


def scoring_threads(wanted: int) -> int:
    """Threads for scoring: `wanted`, or every core this process may use (its affinity: taskset, a cpuset).

    The index's scan of a batch's queries is memory traffic that parallelises well: on 2 quiet cores, 2 threads
    answer 1.4x the requests of 1 at 64 clients over 1.8M items (2,000 against 1,400 a second), the event loop
    fitting between them. On cores other processes also use, fewer threads than cores are better: every small
    operator waits for all its threads to be scheduled (encoding one session took 340 ms with 2 threads and 8-21
    ms with 1 on 2 busy cores): `--threads`."""
    if wanted > 0:
        return wanted
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------------ requests


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session: Any = None
    items: list[Any]  # raw ids, checked against the catalogue's type by `raw_ids`
    order_weight: StrictFloat | StrictInt | None = None  # MultiTRON: this session's preference, over the request's


class RecommendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session: Any = None
    items: list[Any] | None = None
    sessions: list[SessionIn] | None = None
    k: StrictInt = 20
    exclude_seen: StrictBool = False
    allow: list[Any] | None = None
    deny: list[Any] | None = None
    order_weight: StrictFloat | StrictInt | None = None  # MultiTRON: [1 - w, w] between the next click and orders


class BadRequest(Exception):
    """A request the server refuses: the status and one line saying why."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Job:
    """One request's sessions, parsed into the catalogue's raw-id type, and what it asks for."""

    sessions: list[Any]  # echoed session values
    items: list[list]  # raw ids of each session
    k: int
    exclude_seen: bool
    filters: Filters
    single: bool  # answered as one object, not {"results": [...]}
    predictor: Predictor  # the model it was parsed for, which answers it even when a reload swapped in another
    order_weights: list[float] = field(default_factory=list)  # each session's order weight (NaN: the server's default)
    answer: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.items)


# the names pydantic gives each member of a union (`float | int`) in an error's location: not fields of the request
UNION_MEMBERS = {"float": "a number", "int": "a number", "str": "a string", "bool": "true or false", "list": "a list"}


def _validation_line(error: ValidationError) -> str:
    """One plain sentence for pydantic's errors: the first field at fault; a union's members fold into one."""
    problems = error.errors()
    first = problems[0]
    members = [part for part in first["loc"] if isinstance(part, str) and part.split("[")[0] in UNION_MEMBERS]
    fields = [part for part in first["loc"] if part not in members]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in fields).lstrip(".") or "body"
    if members:  # every member refused the same value: say what it is and what the field takes
        same = [p for p in problems if [part for part in p["loc"] if part not in UNION_MEMBERS and str(part).split("[")[0] not in UNION_MEMBERS] == fields]
        wanted = sorted({UNION_MEMBERS[str(part).split("[")[0]] for p in same for part in p["loc"] if str(part).split("[")[0] in UNION_MEMBERS})
        return f"{where} is {json.dumps(first.get('input'), default=str)}, not {' or '.join(wanted)}"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse_request(body: bytes, predictor: Predictor, options: ServeOptions) -> Job:
    """A request body -> a Job, or BadRequest with one line."""
    try:
        document = parse(body)
    except JsonRefused as error:
        raise BadRequest(400, f"malformed JSON ({error})") from None
    try:
        request = RecommendIn.model_validate(document)
    except ValidationError as error:
        raise BadRequest(422, _validation_line(error)) from None
    if (request.items is None) == (request.sessions is None):
        raise BadRequest(422, 'give either "items" (one session) or "sessions" (a list of {"items": [...]}), not both or neither')
    if not 1 <= request.k <= options.max_k:
        raise BadRequest(422, f"k is {request.k}, not between 1 and {options.max_k}")
    numeric = predictor.catalogue.numeric
    default_weight = _order_weight(request.order_weight, "order_weight", predictor)
    if math.isnan(default_weight) and options.order_weight is not None:
        default_weight = options.order_weight
    if request.items is not None:
        listed: list[tuple[Any, list, str, float]] = [(request.session, request.items, "items", default_weight)]
    else:
        assert request.sessions is not None
        if request.session is not None:
            raise BadRequest(422, 'session: give each session\'s id inside "sessions"')
        if len(request.sessions) > options.max_sessions:
            raise BadRequest(422, f"sessions holds {len(request.sessions)} sessions, more than the limit of {options.max_sessions}")
        listed = [
            (
                s.session,
                s.items,
                f"sessions[{i}].items",
                default_weight if s.order_weight is None else _order_weight(s.order_weight, f"sessions[{i}].order_weight", predictor),
            )
            for i, s in enumerate(request.sessions)
        ]
    sessions, items, weights = [], [], []
    for session, ids, where, weight in listed:
        if len(ids) > options.max_session_length:
            raise BadRequest(422, f"{where} holds {len(ids)} ids, more than the limit of {options.max_session_length}")
        items.append(_raw(ids, numeric, where))
        sessions.append(session)
        weights.append(weight)
    filters = NO_FILTERS
    if request.allow is not None or request.deny is not None:
        lists = {}
        for name, given in (("allow", request.allow), ("deny", request.deny)):
            if given is None:
                continue
            if len(given) > options.max_filter_items:
                raise BadRequest(422, f"{name} holds {len(given)} ids, more than the limit of {options.max_filter_items}")
            lists[name] = _id_array(_raw(given, numeric, name), numeric)
        filters = predictor.filters(lists.get("allow"), lists.get("deny"))
    return Job(
        sessions,
        items,
        k=request.k,
        exclude_seen=request.exclude_seen,
        filters=filters,
        single=request.items is not None,
        predictor=predictor,
        order_weights=weights,
    )


def _order_weight(value: float | None, where: str, predictor: Predictor) -> float:
    """A request's order weight, checked; NaN when it gives none (the server's default applies)."""
    if value is None:
        return math.nan
    if not predictor.model.preference_input:
        raise BadRequest(422, f"{where}: this model reads no preference vector; an order weight needs a model trained with --objective multitron")
    if not 0 <= value <= 1:
        raise BadRequest(422, f"{where} is {value}, not between 0 and 1")
    return float(value)


def _raw(ids: list, numeric: bool, where: str) -> list:
    try:
        values = raw_ids(ids, numeric, lambda i: f"{where}[{i}]")
    except RecordProblem as problem:
        raise BadRequest(422, str(problem)) from None
    if numeric:
        for i, value in enumerate(values):
            if not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
                raise BadRequest(422, f"{where}[{i}] is {value}, outside the range of the catalogue's 64-bit ids")
    return values


def _id_array(values: list, numeric: bool) -> np.ndarray:
    if numeric:
        return np.array(values, dtype=np.int64)
    return np.array(values, dtype=str) if values else np.zeros(0, dtype=str)


# ------------------------------------------------------------------------------------------------ metrics


class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        prom.disable_created_metrics()  # the *_created series only double the output
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter("tron_requests", "HTTP requests by path and status", ["path", "status"], registry=r)
        self.latency = prom.Histogram("tron_request_seconds", "Time from request to response", ["path"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = prom.Gauge("tron_requests_in_flight", "Requests being answered", registry=r)
        self.batch_sessions = prom.Histogram("tron_batch_sessions", "Sessions scored together in one batch", buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = prom.Histogram("tron_batch_requests", "Requests answered by one batch", buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = prom.Histogram("tron_batch_seconds", "Time to score one batch", buckets=LATENCY_BUCKETS, registry=r)
        self.sessions = prom.Counter("tron_sessions", "Sessions answered", registry=r)
        self.unknown = prom.Counter("tron_unknown_items", "Unknown item ids skipped", registry=r)
        self.popular = prom.Counter("tron_popular_fallback_sessions", "Sessions without a known item, answered with the most popular items", registry=r)
        self.exact_fallbacks = prom.Counter(
            "tron_index_exact_fallback_sessions", "Sessions scored exactly because the index's candidates left fewer than k items", registry=r
        )
        self.reloads = prom.Counter("tron_reloads", "Bundles loaded, checked and swapped in while serving", registry=r)
        self.failed_reloads = prom.Counter(
            "tron_failed_reloads", "Reloads refused (the bundle failed to load or its checks): the old one kept serving", registry=r
        )
        self.bundle = prom.Gauge("tron_bundle_info", "The bundle being served (1), by name, run and created time", ["name", "run", "created"], registry=r)

    def exposition(self) -> bytes:
        return prom.generate_latest(self.registry)


# ------------------------------------------------------------------------------------------------ batching


@dataclass
class Arrivals:
    """POST /recommend requests inside the server from the moment the `Guard` sees them until their answer starts:
    the batcher holds some of them, the others are being received or parsed and may join the next batch."""

    open: int = 0


class MicroBatcher:
    """Collects jobs for up to `window` seconds (or `max_batch` sessions) and runs `work` on them in one thread.

    A batch waits out the window only where there is company to wait for: requests on their way in that it does not
    hold yet (`Arrivals`), or a last batch of more than one request (concurrent clients, whose next requests
    are still in the network). A lone client's request is scored at once (p50 4.0 -> 1.5 ms at one client,
    BENCHMARKS.md), concurrent clients are batched as before."""

    def __init__(self, work: Callable[[list[Job]], None], window: float, max_batch: int, metrics: Metrics, arrivals: Arrivals | None = None):
        self.work = work
        self.window = window
        self.max_batch = max_batch
        self.metrics = metrics
        self.arrivals = arrivals
        self.held = 0  # jobs submitted and not yet answered: queued, collected or being scored
        self.last_requests = 0  # requests in the last batch
        self.queue: asyncio.Queue[tuple[Job, asyncio.Future]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="tron-batch")

    async def submit(self, job: Job) -> Job:
        future = asyncio.get_running_loop().create_future()
        self.held += 1
        try:
            await self.queue.put((job, future))
            return await future
        finally:
            self.held -= 1

    def _more_coming(self) -> bool:
        """Whether other requests may join: some are on their way that the batcher does not hold yet, or the last
        batch had company (always, without `arrivals`)."""
        return self.arrivals is None or self.arrivals.open > self.held or self.last_requests > 1

    async def _collect(self) -> list[tuple[Job, asyncio.Future]]:
        batch = [await self.queue.get()]
        size = batch[0][0].size
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window
        while size < self.max_batch:
            remaining = deadline - loop.time()
            try:
                waiting = remaining > 0 and self.queue.empty() and self._more_coming()
                item = await asyncio.wait_for(self.queue.get(), remaining) if waiting else self.queue.get_nowait()
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            batch.append(item)
            size += item[0].size
        self.last_requests = len(batch)
        return batch

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            jobs = [job for job, _ in batch]
            started = time.perf_counter()
            try:
                await loop.run_in_executor(self.executor, self.work, jobs)
            except Exception as error:  # a failure of one batch answers its requests with 500, the server goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_sessions.observe(sum(job.size for job in jobs))
            self.metrics.batch_requests.observe(len(jobs))
            for job, future in batch:
                if not future.done():
                    future.set_result(job)


def answer_batch(jobs: list[Job], metrics: Metrics) -> None:
    """Answer a batch's jobs, each with the model it was parsed for: during a reload a batch can hold requests of
    the old model and of the new one, and each group is scored by its own."""
    groups: dict[int, list[Job]] = {}
    for job in jobs:
        groups.setdefault(id(job.predictor), []).append(job)
    for group in groups.values():
        answer_jobs(group[0].predictor, group, metrics)


def answer_jobs(predictor: Predictor, jobs: list[Job], metrics: Metrics) -> None:
    """Score the sessions of `jobs` in one batch and fill each job's `answer`."""
    lengths = [len(items) for job in jobs for items in job.items]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = [raw for job in jobs for items in job.items for raw in items]
    sessions = [session for job in jobs for session in job.sessions]
    weights = np.array([weight for job in jobs for weight in job.order_weights], dtype=np.float64)
    batch = Batch(sessions, [""] * len(sessions), offsets, _id_array(flat, predictor.catalogue.numeric), order_weights=weights if len(weights) else None)
    encoded = predictor.encode(batch)
    first = np.cumsum([0] + [job.size for job in jobs])
    # requests that ask the same and have no filters share one lookup at the largest k; the others get their own
    groups: dict[Any, list[int]] = {}
    for j, job in enumerate(jobs):
        key = ("shared", job.exclude_seen) if job.filters.empty else ("own", j)
        groups.setdefault(key, []).append(j)
    before = predictor.retriever.fallbacks
    for members in groups.values():
        rows = np.concatenate([np.arange(first[j], first[j + 1]) for j in members])
        k = max(jobs[j].k for j in members)
        answer = predictor.answer(encoded, rows, k=k, exclude_seen=jobs[members[0]].exclude_seen, filters=jobs[members[0]].filters)
        lists = answer.lists(predictor.catalogue)
        position = 0
        for j in members:
            job = jobs[j]
            for s in range(job.size):
                ids, scores = lists[position]
                row = first[j] + s
                job.answer.append(
                    {
                        "session": job.sessions[s],
                        "items": ids[: job.k],
                        "scores": None if scores is None else scores[: job.k],
                        "unknown_items": int(encoded.unknown[row]),
                    }
                )
                position += 1
    metrics.sessions.inc(len(lengths))
    metrics.unknown.inc(int(encoded.unknown.sum()))
    metrics.popular.inc(int((encoded.lengths == 0).sum()))
    metrics.exact_fallbacks.inc(predictor.retriever.fallbacks - before)


# ------------------------------------------------------------------------------------------------ the app


class Guard:
    """Pure ASGI middleware: counts and times every request, and refuses bodies over the limit with 413 before the
    app reads them (the body is buffered up to the limit, so a chunked upload is bounded too)."""

    def __init__(self, app, limit: int, metrics: Metrics, arrivals: Arrivals | None = None):
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.arrivals = arrivals if arrivals is not None else Arrivals()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in PATHS else "other"
        status = {"code": 500}
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        arriving = {"open": path == "/recommend" and scope["method"] == "POST"}
        self.arrivals.open += arriving["open"]

        def arrived() -> None:
            if arriving["open"]:
                arriving["open"] = False
                self.arrivals.open -= 1

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                arrived()
            await send(message)

        try:
            body, too_large = b"", False
            if scope["method"] in ("POST", "PUT", "PATCH"):
                declared = dict(scope["headers"]).get(b"content-length")
                too_large = declared is not None and declared.isdigit() and int(declared) > self.limit
                more = not too_large
                chunks: list[bytes] = []
                size = 0
                while more:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    more = message.get("more_body", False)
                    if size > self.limit:
                        too_large = True
                        break
                body = b"".join(chunks)
            if too_large:
                reason = f"the body is over the limit of {self.limit} bytes (--max-body-bytes)"
                await JSONResponse({"error": reason}, status_code=413, headers={"connection": "close"})(scope, receive, counted_send)
                return
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, counted_send)
        finally:
            arrived()
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(path, str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)


# ------------------------------------------------------------------------------------------------ reloading


@dataclass(frozen=True)
class ModelSource:
    """Where the served model comes from (a bundle path, maybe a symlink such as bundles/current) and how it is
    loaded: at start and again on every reload."""

    path: Path
    device: torch.device
    exact: bool = False
    index_params: tuple[str, ...] = ()

    def load(self, options: ServeOptions) -> Predictor:
        """The model the path points at now (a symlink resolved once, so that one load reads one bundle), its
        files checked against their sha256 (`load_predictor`), checked against the server's options and answering
        a warm-up query."""
        target = Path(os.path.realpath(self.path)) if Path(self.path).is_symlink() else Path(self.path)
        predictor = load_predictor(target, self.device, self.exact, self.index_params)
        if options.order_weight is not None and not predictor.model.preference_input:
            raise UsageError(f"{self.path} reads no preference vector: --order-weight needs a model trained with --objective multitron")
        warm_up(predictor)
        return predictor


def warm_up(predictor: Predictor) -> None:
    """One query through the whole path (encode, the index or exact top-k) before the model may answer: a bundle
    that loads but cannot score is refused here, and the first real request does not pay for first touches."""
    catalogue = predictor.catalogue
    popular = catalogue.raw_ids(catalogue.by_clicks[:2])
    batch = Batch([None], [""], np.array([0, len(popular)], dtype=np.int64), popular)
    answer = predictor.answer(predictor.encode(batch), np.zeros(1, dtype=np.int64), k=min(20, len(catalogue)))
    if not (answer.ids > 0).any() or not np.isfinite(answer.scores[answer.ids > 0]).all():
        raise TronError(f"{predictor.path} answered its warm-up query with no item or a non-finite score", "Re-run: tron export")


def bundle_stamp(path: Path) -> tuple[str, int, int, int] | None:
    """What identifies the bundle a path points at now: where it resolves to, and its config.json's inode, time and
    size (a new export replaces the directory whole); None while nothing complete is there."""
    try:
        real = os.path.realpath(path)
        stat = os.stat(os.path.join(real, "config.json"))
    except OSError:
        return None
    return real, stat.st_ino, stat.st_mtime_ns, stat.st_size


def about_bundle(predictor: Predictor) -> dict[str, Any]:
    """The served bundle's name, run, created time and catalogue size (for /metadata, /metrics and the logs)."""
    document = predictor.document
    run = document.get("run") if predictor.kind == "bundle" else {"name": document.get("name", predictor.path.name)}
    return {
        "name": document.get("name", predictor.path.name),
        "path": str(predictor.path.resolve()),
        "run": run.get("name") if isinstance(run, dict) else None,
        "created": document.get("created"),
        "n_items": len(predictor.catalogue),
    }


def _yield_the_cores() -> None:
    """Lower the priority of the thread that reloads (hashing and reading gigabytes), so that the threads answering
    requests keep the cores meanwhile. Linux gives each thread its own nice value; elsewhere this does nothing."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RELOAD_NICENESS)


class Live:
    """The model being served, swapped whole by a reload: a request keeps the predictor it was parsed with, so
    requests in flight finish on the old model while new ones get the new. One reload at a time, in a thread of its
    own (the batches go on being scored meanwhile); a bundle that fails to load or its checks is refused with a
    log line, counted, and the old one keeps serving."""

    def __init__(self, predictor: Predictor, source: ModelSource | None, options: ServeOptions, metrics: Metrics, report: Reporter):
        self.predictor = predictor
        self.source, self.options, self.metrics, self.report = source, options, metrics, report
        self.stamp = None if source is None else bundle_stamp(source.path)
        self.refused: tuple | None = None  # the stamp of the last bundle refused: --watch does not try it again
        self.reloads = 0
        self.failed = 0
        self.last: dict[str, Any] | None = None  # the last reload: when, why, whether it worked, the error
        self.lock = asyncio.Lock()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="tron-reload", initializer=_yield_the_cores)
        self._show(predictor)

    def _show(self, predictor: Predictor) -> None:
        self.metrics.bundle.clear()
        bundle = about_bundle(predictor)
        self.metrics.bundle.labels(str(bundle["name"]), str(bundle["run"]), str(bundle["created"])).set(1)

    async def reload(self, reason: str) -> dict[str, Any]:
        """Load the bundle the path points at now and swap it in, or refuse it; returns what happened."""
        if self.source is None:
            raise BadRequest(409, "this server was started without a bundle path to reload from")
        async with self.lock:
            stamp = bundle_stamp(self.source.path)
            old = about_bundle(self.predictor)["name"]
            when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            started = time.perf_counter()
            try:
                predictor = await asyncio.get_running_loop().run_in_executor(self.executor, self.source.load, self.options)
            except Exception as error:  # any failure of a new bundle leaves the old one serving
                line = error.line() if isinstance(error, TronError) else f"{type(error).__name__}: {error}"
                self.failed += 1
                self.refused = stamp
                self.metrics.failed_reloads.inc()
                self.last = {"at": when, "reason": reason, "seconds": round(time.perf_counter() - started, 3), "ok": False, "error": line}
                self.report.warn(f"reload ({reason}) of {self.source.path} refused, still serving {old}: {line}")
                return {"status": "refused", "error": line, "serving": about_bundle(self.predictor)}
            self.predictor, self.stamp = predictor, stamp
            if gc.get_freeze_count():  # a server that froze its objects at start (`serve`) freezes the new model's too
                gc.freeze()
            self.reloads += 1
            self.metrics.reloads.inc()
            self._show(predictor)
            bundle = about_bundle(predictor)
            self.last = {"at": when, "reason": reason, "seconds": round(time.perf_counter() - started, 3), "ok": True, "error": None}
            self.report.info(
                f"reloaded ({reason}) {self.source.path} in {self.last['seconds']:.1f} s: {bundle['name']} (run {bundle['run']}, {bundle['n_items']:,} items), was {old}"
            )
            return {"status": "reloaded", "serving": bundle}

    async def watch(self) -> None:
        """--watch: reload when the bundle path points at another complete bundle than the one served (and than
        the one last refused)."""
        assert self.source is not None
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            stamp = bundle_stamp(self.source.path)
            if stamp is not None and stamp != self.stamp and stamp != self.refused:
                await self.reload("the bundle path changed")

    def state(self) -> dict[str, Any]:
        return {"count": self.reloads, "failed": self.failed, "last": self.last}


def metadata(live: Live, options: ServeOptions) -> dict[str, Any]:
    predictor = live.predictor
    document = predictor.document
    index = predictor.index
    return {
        "tron_version": __version__,
        "model": {
            "path": str(predictor.path.resolve()),
            "kind": predictor.kind,
            "type": document.get("model", {}).get("type"),
            "max_length": predictor.max_length,
        },
        "bundle": about_bundle(predictor),
        "source": None if live.source is None else str(live.source.path),
        "reloads": live.state(),
        "dataset": document.get("dataset") if predictor.kind == "bundle" else (document.get("dataset") or {}).get("name"),
        "n_items": len(predictor.catalogue),
        "item_id_type": "integer" if predictor.catalogue.numeric else "string",
        "event_types": list(predictor.event_types),
        "preference_input": predictor.model.preference_input,
        "order_weight": (DEFAULT_ORDER_WEIGHT if options.order_weight is None else options.order_weight) if predictor.model.preference_input else None,
        "scoring": "exact" if index is None else "index",
        "index": None if index is None else {**{k: v for k, v in index.section.items() if k != "search"}, "search": index.search_params},
        "limits": {
            "max_k": options.max_k,
            "max_session_length": options.max_session_length,
            "max_sessions": options.max_sessions,
            "max_filter_items": options.max_filter_items,
            "max_body_bytes": options.max_body_bytes,
        },
        "batching": {"window_ms": options.batch_window_ms, "max_batch": options.max_batch, "threads": scoring_threads(options.threads)},
        "admin": {"reload": options.admin_token is not None, "watch": options.watch},
    }


def authorised(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the bearer `token`, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def create_app(predictor: Predictor, options: ServeOptions = ServeOptions(), source: ModelSource | None = None, report: Reporter = SILENT) -> Any:
    """The ASGI app (FastAPI behind the Guard middleware) serving `predictor`, reloaded from `source` on SIGHUP (when
    the app runs in the main thread), on POST /admin/reload (with `options.admin_token`) and with `options.watch`."""
    metrics = Metrics()
    arrivals = Arrivals()
    live = Live(predictor, source, options=options, metrics=metrics, report=report)
    state: dict[str, Any] = {}
    endpoints = [path for path in PATHS if path != "/admin/reload" or options.admin_token is not None]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        batcher = MicroBatcher(
            lambda jobs: answer_batch(jobs, metrics), window=options.batch_window_ms / 1000, max_batch=options.max_batch, metrics=metrics, arrivals=arrivals
        )
        tasks = [asyncio.create_task(batcher.run())]
        if options.watch and source is not None:
            tasks.append(asyncio.create_task(live.watch()))
        hangup = source is not None and threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread
        reloads: set[asyncio.Task] = set()  # SIGHUP's reloads, held until done (the loop keeps only weak references)

        def hung_up() -> None:
            task = loop.create_task(live.reload("SIGHUP"))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        if hangup:
            loop.add_signal_handler(signal.SIGHUP, hung_up)
        state["batcher"] = batcher
        try:
            yield
        finally:
            if hangup:
                loop.remove_signal_handler(signal.SIGHUP)
            for task in [*tasks, *reloads]:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            batcher.executor.shutdown(wait=True)
            live.executor.shutdown(wait=True)

    app = FastAPI(title="tron", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/recommend")
    async def recommend(request: Request) -> Response:
        try:
            job = parse_request(await request.body(), live.predictor, options)
        except BadRequest as bad:
            return JSONResponse({"error": bad.reason}, status_code=bad.status)
        try:
            done = await state["batcher"].submit(job)
        except Exception as error:  # scoring failed: say so, keep serving
            return JSONResponse({"error": f"scoring failed ({type(error).__name__}: {error})"}, status_code=500)
        return JSONResponse(done.answer[0] if done.single else {"results": done.answer})

    @app.post("/admin/reload")
    async def reload(request: Request) -> Response:
        if options.admin_token is None:
            return JSONResponse(
                {"error": f"no endpoint /admin/reload (there are {', '.join(endpoints)}; tron serve --admin-token turns it on)"}, status_code=404
            )
        if not authorised(request.headers.get("authorization"), options.admin_token):
            return JSONResponse({"error": "POST /admin/reload needs the header Authorization: Bearer TOKEN (--admin-token)"}, status_code=401)
        try:
            result = await live.reload("POST /admin/reload")
        except BadRequest as bad:
            return JSONResponse({"error": bad.reason}, status_code=bad.status)
        if result["status"] != "reloaded":
            return JSONResponse({"error": f"the bundle was refused, still serving {result['serving']['name']}: {result['error']}"}, status_code=409)
        return JSONResponse({**result, "reloads": live.state()})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        predictor = live.predictor
        return {"status": "ok", "n_items": len(predictor.catalogue), "scoring": "exact" if predictor.index is None else "index"}

    @app.get("/metadata")
    async def about() -> dict[str, Any]:
        return metadata(live, options)

    @app.get("/metrics")
    async def exposition() -> Response:
        return Response(metrics.exposition(), media_type=prom.CONTENT_TYPE_LATEST)

    @app.exception_handler(404)
    async def not_found(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": f"no endpoint {request.url.path} (there are {', '.join(endpoints)})"}, status_code=404)

    @app.exception_handler(405)
    async def wrong_method(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": f"{request.method} is not allowed on {request.url.path}"}, status_code=405)

    return Guard(app, options.max_body_bytes, metrics, arrivals)


def listen(host: str, port: int) -> socket.socket:
    """A bound socket, or a one-line error when the address is taken or wrong (port 0: a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({error.strerror or error})", "Choose another --port (0 takes a free one) or --host") from None
    return sock


def serve(
    predictor: Predictor,
    options: ServeOptions,
    source: ModelSource | None = None,
    report: Reporter = SILENT,
    log_level: str = "warning",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C; in-flight requests are answered before it returns. SIGHUP reloads from `source`."""
    import uvicorn

    sock = listen(options.host, options.port)
    threads = scoring_threads(options.threads)
    torch.set_num_threads(threads)
    if predictor.index is not None:
        require_faiss().omp_set_num_threads(threads)
    app = create_app(predictor, options, source=source, report=report)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    if on_ready is not None:
        started = server.startup
        host, port = sock.getsockname()[:2]

        async def startup(sockets=None):
            await started(sockets)
            if server.started:
                on_ready(f"http://{f'[{host}]' if ':' in host else host}:{port}")

        server.startup = startup  # type: ignore[method-assign]
    # everything alive now (the modules, the model, its catalogue: 216,000 objects) lives as long as the server: out
    # of the collector's sight, so that a full collection under load takes microseconds, not the 100 ms that were
    # the p99 of every load test (BENCHMARKS.md, issue #30)
    gc.collect()
    gc.freeze()
    # uvicorn re-raises the SIGTERM it handled once it has drained; a handler of our own lets the process exit 0
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
