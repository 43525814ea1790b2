"""`tron serve`: every endpoint and every bad request in-process (FastAPI's test client), and the real command as a
subprocess: concurrent answers equal `tron recommend --exact`, SIGTERM drains in-flight requests and exits 0, and a
hot swap (--watch, SIGHUP, POST /admin/reload) drops no request, answers the new items and refuses a corrupt bundle."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import torch
from fastapi.testclient import TestClient

from tests.helpers import invoke, tiny_train_args
from tron_cli.inference.predictor import load_predictor
from tron_cli.stages.serve import ServeOptions, create_app

LIMITS = ServeOptions(max_k=50, max_session_length=30, max_sessions=4, max_filter_items=10, max_body_bytes=2000)


@pytest.fixture(scope="module")
def bundle(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("served") / "hnsw"
    result = invoke("export", str(tiny_model[0]), "--out", str(out), "--index", "hnsw")
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def client(bundle):
    with TestClient(create_app(load_predictor(bundle, torch.device("cpu")), LIMITS)) as test_client:
        yield test_client


def test_health_and_metadata(client):
    assert client.get("/health").json() == {"status": "ok", "n_items": 300, "scoring": "index"}
    about = client.get("/metadata").json()
    assert about["n_items"] == 300 and about["model"]["type"] == "sasrec" and about["scoring"] == "index"
    assert about["index"]["kind"] == "hnsw" and about["index"]["search"] == {"ef_search": 128}
    assert about["limits"]["max_k"] == 50 and about["batching"]["window_ms"] == 2.0 and about["batching"]["max_batch"] == 64
    assert about["tron_version"] and about["item_id_type"] == "integer"


def test_one_session(client):
    answer = client.post("/recommend", json={"session": "a", "items": [3, 4, 3], "k": 5}).json()
    assert answer["session"] == "a" and len(answer["items"]) == 5 and len(answer["scores"]) == 5 and answer["unknown_items"] == 0
    assert answer["scores"] == sorted(answer["scores"], reverse=True)
    seen = client.post("/recommend", json={"items": [3, 4, 3], "k": 5, "exclude_seen": True}).json()
    assert not {3, 4} & set(seen["items"]) and len(seen["items"]) == 5


def test_a_list_of_sessions_unknown_ids_and_fallback(client):
    answer = client.post("/recommend", json={"sessions": [{"session": 1, "items": [3, "4", 10**9]}, {"items": []}, {"session": 3, "items": [-7]}], "k": 3})
    results = answer.json()["results"]
    assert [r["session"] for r in results] == [1, None, 3]
    assert results[0]["unknown_items"] == 1 and results[0]["scores"] is not None
    assert results[1]["scores"] is None and results[2]["scores"] is None and results[2]["unknown_items"] == 1  # the most popular items
    assert results[1]["items"] == results[2]["items"] and len(results[1]["items"]) == 3
    everything = client.post("/recommend", json={"items": [3], "k": 50}).json()
    assert len(everything["items"]) == 50


def test_allow_and_deny(client):
    top = client.post("/recommend", json={"items": [5, 6], "k": 6}).json()["items"]
    denied = client.post("/recommend", json={"items": [5, 6], "k": 6, "deny": top[:3]}).json()["items"]
    assert not set(denied) & set(top[:3]) and len(denied) == 6
    allowed = client.post("/recommend", json={"items": [5, 6], "k": 6, "allow": [*top[3:], 123456]}).json()["items"]
    assert allowed == top[3:]
    both = client.post("/recommend", json={"sessions": [{"items": [5, 6]}, {"items": [5]}], "k": 6, "allow": top, "deny": top[:1]}).json()["results"]
    assert all(set(r["items"]) <= set(top[1:]) for r in both)


def test_metrics(client):
    client.post("/recommend", json={"items": [3], "k": 2})
    client.post("/recommend", content=b"{")
    text = client.get("/metrics").text
    assert re.search(r'tron_requests_total\{path="/recommend",status="200"\} [1-9]', text)
    assert re.search(r'tron_requests_total\{path="/recommend",status="400"\} [1-9]', text)
    for name in ("tron_request_seconds_bucket", "tron_batch_sessions_bucket", "tron_batch_seconds_count", "tron_sessions_total", "tron_unknown_items_total"):
        assert name in text, name
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


BAD = [
    ("malformed-json", b'{"items": [1, 2', 400, "malformed JSON"),
    ("not-an-object", b"[1, 2]", 422, "body"),
    ("empty-body", b"", 400, "malformed JSON"),
    ("unknown-field", b'{"items": [1], "kk": 3}', 422, "kk: Extra inputs are not permitted"),
    ("unknown-session-field", b'{"sessions": [{"items": [1], "x": 1}]}', 422, "sessions[0].x"),
    ("decimal-id", b'{"items": [1.5]}', 422, "items[0] is 1.5, not an integer id"),
    ("boolean-id", b'{"items": [true]}', 422, "items[0] is true"),
    ("null-id", b'{"items": [3, null]}', 422, "items[1] is null"),
    ("object-id", b'{"items": [{"a": 1}]}', 422, "items[0]"),
    ("non-numeric-string-id", b'{"items": ["abc"]}', 422, 'items[0] is "abc"'),
    ("id-beyond-64-bits", b'{"items": [18446744073709551616]}', 422, "64-bit"),
    ("items-not-a-list", b'{"items": 3}', 422, "items"),
    ("too-long-session", json.dumps({"items": list(range(1, 32))}).encode(), 422, "items holds 31 ids, more than the limit of 30"),
    ("too-long-listed-session", json.dumps({"sessions": [{"items": [1]}, {"items": list(range(1, 32))}]}).encode(), 422, "sessions[1].items holds 31"),
    ("too-many-sessions", json.dumps({"sessions": [{"items": [1]}] * 5}).encode(), 422, "more than the limit of 4"),
    ("k-zero", b'{"items": [1], "k": 0}', 422, "k is 0, not between 1 and 50"),
    ("k-too-large", b'{"items": [1], "k": 51}', 422, "k is 51"),
    ("k-a-string", b'{"items": [1], "k": "5"}', 422, "k: Input should be a valid integer"),
    ("k-a-float", b'{"items": [1], "k": 5.0}', 422, "k:"),
    ("exclude-seen-not-a-bool", b'{"items": [1], "exclude_seen": "yes"}', 422, "exclude_seen"),
    ("items-and-sessions", b'{"items": [1], "sessions": []}', 422, "not both or neither"),
    ("neither", b'{"k": 3}', 422, "not both or neither"),
    ("too-many-filter-ids", json.dumps({"items": [1], "deny": list(range(11))}).encode(), 422, "deny holds 11 ids"),
    ("bad-filter-id", b'{"items": [1], "allow": [1, 2.5]}', 422, "allow[1] is 2.5"),
    ("nested-900-deep", b'{"items": ' + b"[" * 900 + b"]" * 900 + b"}", 400, "nested deeper than 64"),
    ("a-5000-digit-integer", b'{"items": [1], "k": ' + b"9" * 1500 + b"}", 400, "an integer of more than 100 digits"),
    ("nan-k", b'{"items": [1], "k": NaN}', 400, "NaN is not JSON"),
    ("order-weight-a-string", b'{"items": [1], "order_weight": "heavy"}', 422, 'order_weight is "heavy", not a number'),
    ("session-order-weight-a-list", b'{"sessions": [{"items": [1], "order_weight": [1]}]}', 422, "sessions[0].order_weight is [1], not a number"),
    ("body-over-limit", json.dumps({"items": [1], "session": "x" * 3000}).encode(), 413, "over the limit of 2000 bytes"),
]


@pytest.mark.parametrize("body, status, words", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_requests_get_a_4xx_with_one_line(client, body, status, words):
    response = client.post("/recommend", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == status, response.text
    reason = response.json()["error"]
    assert words in reason and "\n" not in reason, reason
    assert client.get("/health").status_code == 200  # the server goes on


def test_a_chunked_body_over_the_limit_is_refused(client):
    def chunks():
        for _ in range(10):
            yield b" " * 500

    response = client.post("/recommend", content=chunks())
    assert response.status_code == 413 and "over the limit" in response.json()["error"]


def test_unknown_paths_and_methods(client):
    assert client.get("/nothing").status_code == 404 and "no endpoint /nothing" in client.get("/nothing").json()["error"]
    assert client.get("/recommend").status_code == 405


def test_string_catalogue_takes_integers_by_their_spelling(client):
    # the tiny catalogue has integer ids: strings of an integer are accepted, as tron recommend accepts them
    assert client.post("/recommend", json={"items": ["3", 4], "k": 2}).status_code == 200


def test_a_port_in_use_is_one_line(bundle):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = invoke("serve", str(bundle), "--port", str(taken.getsockname()[1]), "--device", "cpu")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "cannot listen on 127.0.0.1" in result.stderr, result.stderr


# ------------------------------------------------------------------------------------------------ the real command


def _start(bundle: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tron_cli", "serve", str(bundle), "--port", "0", "--device", "cpu", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
    if match is None:
        process.kill()
        raise AssertionError(f"tron serve did not start: {line}{process.stderr.read()}")
    return process, match.group(1)


def test_serve_answers_concurrent_requests_as_tron_recommend_does_and_drains_on_sigterm(bundle):
    sessions = [{"session": s, "items": [(s * 7) % 300 + 1, (s * 13) % 300 + 1, (s * 3) % 300 + 1]} for s in range(24)]
    lines = "".join(json.dumps(s) + "\n" for s in sessions)
    recommended = invoke("recommend", str(bundle), "--exact", "-k", "7", "--exclude-seen", "--device", "cpu", input=lines)
    assert recommended.exit_code == 0, recommended.stderr
    expected = {r["session"]: r for r in map(json.loads, recommended.stdout.splitlines())}

    process, url = _start(bundle, "--exact", "--batch-window-ms", "300", "--max-batch", "8")
    try:
        with httpx.Client(base_url=url, timeout=60) as http, ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda s: http.post("/recommend", json={**s, "k": 7, "exclude_seen": True}), sessions))
            for response in answers:
                assert response.status_code == 200, response.text
                got = response.json()
                assert got["items"] == expected[got["session"]]["items"]
                assert got["scores"] == pytest.approx(expected[got["session"]]["scores"], rel=1e-5, abs=1e-5)
            batches = re.search(r"tron_batch_sessions_count (\S+)", http.get("/metrics").text)
            assert batches is not None and float(batches.group(1)) < len(sessions)  # requests were scored together

            # SIGTERM while requests wait in a 300 ms batching window: they are answered, then the server exits 0
            in_flight = [pool.submit(http.post, "/recommend", json={**s, "k": 7, "exclude_seen": True}) for s in sessions[:6]]
            started = threading.Event()
            threading.Timer(0.1, started.set).start()
            started.wait()
            process.send_signal(signal.SIGTERM)
            drained = [future.result() for future in in_flight]
        assert all(response.status_code == 200 for response in drained)
        assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ------------------------------------------------------------------------------------------------ hot swap


@pytest.fixture(scope="module")
def next_bundle(tiny_model, grown, tmp_path_factory) -> Path:
    """A bundle of the next day: warm-started from `tiny_model` on the `grown` dataset (more items)."""
    root = tmp_path_factory.mktemp("next")
    run = root / "run"
    result = invoke("train", str(grown), *tiny_train_args(epochs=1, overfit_batches=2), "--init-from", str(tiny_model[0]), "--out", str(run))
    assert result.exit_code == 0, result.stderr
    assert invoke("export", str(run), "--out", str(root / "next")).exit_code == 0
    return root / "next"


def _point(link: Path, target: Path) -> None:
    """Switch a symlink atomically, as `ln -s TARGET tmp && mv -T tmp LINK` does."""
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _until(condition, seconds: float = 90.0):
    """Poll `condition` until it returns something true (its value), failing after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s")


def test_a_swap_drops_no_request_answers_new_items_and_a_corrupt_bundle_leaves_the_old_one_serving(tiny_model, next_bundle, tmp_path):
    old, new = tiny_model[1], next_bundle
    new_ids = sorted(set(pq.read_table(new / "items.parquet").column("id").to_pylist()) - set(pq.read_table(old / "items.parquet").column("id").to_pylist()))
    corrupt = tmp_path / "corrupt"
    shutil.copytree(new, corrupt)
    (corrupt / "model.safetensors").write_bytes((corrupt / "model.safetensors").read_bytes()[:-100])
    link = tmp_path / "current"
    _point(link, old)
    process, url = _start(link, "--watch", "--admin-token", "s3cret", "--batch-window-ms", "5")
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:  # requests from a background thread, across every swap below
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                statuses.append(http.post("/recommend", json={"items": [3, 4, 3], "k": 5}).status_code)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            about = http.get("/metadata").json()
            assert about["bundle"]["name"] == old.name and about["reloads"] == {"count": 0, "failed": 0, "last": None}
            before = http.post("/recommend", json={"items": new_ids[:3], "k": 5, "allow": new_ids}).json()
            assert before["unknown_items"] == 3 and before["items"] == []  # unknown to the old model: no known click, nothing allowed

            _point(link, new)  # --watch sees it, loads and checks it in the background, swaps it in
            about = _until(lambda: (lambda m: m if m["reloads"]["count"] == 1 else None)(http.get("/metadata").json()))
            assert about["bundle"]["name"] == new.name and about["n_items"] > 300 and about["reloads"]["last"]["ok"]
            after = http.post("/recommend", json={"items": [*new_ids[:3], 3], "k": 5, "allow": new_ids}).json()
            assert after["unknown_items"] == 0 and len(after["items"]) == 5 and set(after["items"]) <= set(new_ids) and after["scores"] is not None

            _point(link, corrupt)  # refused: the new one keeps serving
            about = _until(lambda: (lambda m: m if m["reloads"]["failed"] == 1 else None)(http.get("/metadata").json()))
            assert about["bundle"]["name"] == new.name and "sha256" in about["reloads"]["last"]["error"]
            process.send_signal(signal.SIGHUP)  # reloads (the corrupt bundle again): refused again
            _until(lambda: http.get("/metadata").json()["reloads"]["failed"] == 2)
            assert http.post("/admin/reload").status_code == 401
            assert http.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
            refused = http.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
            assert refused.status_code == 409 and "still serving" in refused.json()["error"] and "sha256" in refused.json()["error"]
            _point(link, old)
            reloaded = http.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
            assert reloaded.status_code == 200 and reloaded.json()["serving"]["name"] == old.name
            metrics = http.get("/metrics").text
            assert re.search(r"tron_reloads_total [2-9]", metrics) and "tron_failed_reloads_total 3.0" in metrics
            assert re.search(rf'tron_bundle_info\{{created="[^"]+",name="{old.name}",run="[^"]+"\}} 1\.0', metrics), metrics
    finally:
        stop.set()
        loader.join()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert len(statuses) > 10 and set(statuses) == {200}, sorted(set(statuses))
    log = process.stderr.read() if process.stderr else ""
    assert "reloaded (the bundle path changed)" in log and "refused, still serving" in log and "(SIGHUP)" in log


def test_admin_reload_is_off_without_a_token_and_swaps_in_process(tiny_model, next_bundle, tmp_path):
    from tron_cli.stages.serve import ModelSource

    link = tmp_path / "current"
    _point(link, tiny_model[1])
    source = ModelSource(link, torch.device("cpu"))
    with TestClient(create_app(load_predictor(tiny_model[1], torch.device("cpu")), LIMITS, source=source)) as off:
        response = off.post("/admin/reload", headers={"Authorization": "Bearer x"})
        assert response.status_code == 404 and "--admin-token" in response.json()["error"]
    options = ServeOptions(admin_token="s3cret")
    with TestClient(create_app(load_predictor(tiny_model[1], torch.device("cpu")), options, source=source)) as client:
        assert client.post("/admin/reload", headers={"Authorization": "Basic s3cret"}).status_code == 401
        _point(link, next_bundle)
        answer = client.post("/admin/reload", headers={"Authorization": "bearer s3cret"}).json()
        assert answer["status"] == "reloaded" and answer["serving"]["name"] == next_bundle.name and answer["reloads"]["count"] == 1
        assert client.get("/health").json()["n_items"] == answer["serving"]["n_items"] > 300


def test_a_lone_request_is_scored_without_waiting_out_the_batching_window(bundle):
    """Nothing else on its way (the Guard counts what arrives): a 2 s window does not delay a lone client."""
    options = ServeOptions(batch_window_ms=2000)
    with TestClient(create_app(load_predictor(bundle, torch.device("cpu")), options)) as lone:
        for _ in range(3):
            started = time.perf_counter()
            assert lone.post("/recommend", json={"items": [1, 2, 3], "k": 5}).status_code == 200
            assert time.perf_counter() - started < 1.0


def test_a_batch_waits_for_requests_on_their_way_and_after_one_with_company():
    """The window is waited out while a request the batcher does not hold is being received, and after a batch of
    more than one request (concurrent clients); not for a lone request."""
    import asyncio

    from tron_cli.inference.retrieval import NO_FILTERS
    from tron_cli.stages.serve import Arrivals, Job, Metrics, MicroBatcher

    def job() -> Job:
        return Job([None], [[1]], k=1, exclude_seen=False, filters=NO_FILTERS, single=True, predictor=None)  # type: ignore[arg-type]

    async def timed(batcher: MicroBatcher, n: int) -> float:
        started = time.perf_counter()
        await asyncio.gather(*(batcher.submit(job()) for _ in range(n)))
        return time.perf_counter() - started

    async def scenario() -> list[float]:
        arrivals = Arrivals()
        batcher = MicroBatcher(lambda jobs: None, window=0.4, max_batch=64, metrics=Metrics(), arrivals=arrivals)
        runner = asyncio.create_task(batcher.run())
        try:
            arrivals.open = 1
            lone = await timed(batcher, 1)
            arrivals.open = 2  # a second request is being received: the first waits for it
            expecting = await timed(batcher, 1)
            arrivals.open = 2
            together = await timed(batcher, 2)  # both at once: one batch of two, so the next waits
            arrivals.open = 1
            after_company = await timed(batcher, 1)
            return [lone, expecting, together, after_company]
        finally:
            runner.cancel()

    lone, expecting, together, after_company = asyncio.run(scenario())
    assert lone < 0.2 and together < 0.2
    assert expecting >= 0.35 and after_company >= 0.35


def test_a_server_that_froze_its_objects_freezes_a_reloaded_model_too(tiny_model, next_bundle, tmp_path):
    """`tron serve` moves what lives as long as it out of the collector's sight (a full collection of a loaded
    model took 100 ms, the p99 of every load test); a reload does the same for the new model."""
    import gc

    from tron_cli.stages.serve import ModelSource

    link = tmp_path / "current"
    _point(link, tiny_model[1])
    source = ModelSource(link, torch.device("cpu"))
    options = ServeOptions(admin_token="s3cret")
    with TestClient(create_app(load_predictor(tiny_model[1], torch.device("cpu")), options, source=source)) as client:
        gc.freeze()
        try:
            frozen = gc.get_freeze_count()
            _point(link, next_bundle)
            assert client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"}).json()["status"] == "reloaded"
            assert gc.get_freeze_count() > frozen
        finally:
            gc.unfreeze()
