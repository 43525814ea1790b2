"""How fast `tron serve` answers over HTTP: wrk against 127.0.0.1, with the item index and exactly, side by side.

    python benchmarks/serve.py                                      # 1.8M and 20k items, concurrency 1, 8, 64
    python benchmarks/serve.py --items 20000 --concurrency 1,64 --duration 5
    python benchmarks/serve.py --items 1800000 --swap --concurrency 8 --duration 20   # the load across a hot swap

For each catalogue size a synthetic bundle is built straight through the library (`export.write_bundle`): a
SASRec (d=200, 2 blocks, max_length 50) with random weights, never trained, and an item index of --index
(default ivf-fp16: its query cost does not depend on the weights, it builds over 1.8M items in a minute where
HNSW takes over an hour on 2 cores, and it scans half the bytes of ivf). Bundles are kept under --workdir and
reused. For each bundle the real command `tron serve` is started twice, with its index and with --exact, and wrk (a C load generator:
`apt-get install wrk`; it costs the 2 cores far less than a Python one would) sends POST /recommend of random
sessions (1..20 random items, k=20) over --duration seconds at each concurrency (one connection per
concurrent client). Printed: requests/s, p50/p95/p99 latency and errors (socket errors + non-2xx), which must
be 0. The server is stopped with SIGTERM and must exit 0. A benchmark prints numbers and never asserts a time.

With --swap, the server (index scoring) serves a symlink with --watch, and --swap-at seconds into one wrk run
at the first --concurrency the symlink is switched (an atomic rename) to a copy of the bundle (a directory of
its own, renamed in its config.json): the server loads and checks it (sha256 of every file, weights, index,
warm-up query) while it answers, and swaps it in. Printed: the run's requests/s, percentiles and errors, and
when the reload started and how long it took (/metadata), so that the swap is seen to fall inside the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _roofline import describe, machine_rates

from tron_cli.artifacts.sessions import catalogue_fingerprint, write_items
from tron_cli.modelio import save_weights
from tron_cli.models import build_model
from tron_cli.stages.export import IndexRequest, write_bundle

REQUESTS = """
local bodies = {%s}
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/recommend", {["Content-Type"] = "application/json"}, bodies[(counter %% #bodies) + 1])
end
"""
HEALTH = """
request = function()
  return wrk.format("GET", "/health")
end
"""
DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "seconds": %f, "socket_errors": %d, "non_2xx": %d, "p50": %d, "p95": %d, "p99": %d}\\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def synthetic_bundle(workdir: Path, n_items: int, index: str, index_params: tuple[str, ...], seed: int = 0) -> Path:
    """A bundle of a random SASRec over `n_items` items with an item index, reused when it exists."""
    out = workdir / f"random-{n_items}-{index}{'-' + '-'.join(index_params) if index_params else ''}"
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(seed)
    section = {"type": "sasrec", "n_items": n_items, "hidden_size": 200, "num_layers": 2, "max_length": 50}
    model = build_model(section).eval()
    raw = pa.array(np.arange(1, n_items + 1, dtype=np.int64))
    counts = np.random.default_rng(seed).zipf(1.5, n_items).astype(np.int64)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        weights, items = Path(tmp) / "model.safetensors", Path(tmp) / "items.parquet"
        save_weights(model, weights, section)
        write_items(items, raw, counts)
        fields = {
            "model": section,
            "max_length": 50,
            "n_items": n_items,
            "catalogue_sha256": catalogue_fingerprint(raw),
            "item_id_type": "integer",
            "event_types": ["clicks"],
            "dataset": f"random-{n_items}",
            "run": None,
        }
        started = time.perf_counter()
        write_bundle(out, model, weights=weights, items=items, fields=fields, index=IndexRequest(index, index_params))
        print(f"built {out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return out


def start_server(bundle: Path, exact: bool, extra: list[str]) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "tron_cli", "serve", str(bundle), "--port", "0", "--device", "cpu", *(["--exact"] if exact else []), *extra]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert process.stderr is not None
    line = process.stderr.readline()
    match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
    if match is None:
        process.kill()
        raise SystemExit(f"tron serve did not start: {line}{process.stderr.read()}")
    return process, match.group(1)


def stop_server(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=120)


def run_wrk(url: str, script: Path, connections: int, seconds: int) -> dict:
    """wrk's RESULT line for `seconds` of `connections` clients running `script` (its requests) against `url`."""
    threads = min(2, connections)
    output = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "30s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
    ).stdout
    # one RESULT line per run (done() runs once, in the main thread)
    return json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])


def bundle_copy(bundle: Path) -> Path:
    """A copy of `bundle` under another name (reused when it exists): what the swap switches to."""
    copy = bundle.with_name(bundle.name + "-copy")
    if not (copy / "config.json").is_file():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(bundle, copy.with_name(copy.name + ".tmp"))
        config = copy.with_name(copy.name + ".tmp") / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "name": copy.name}, indent=2))  # config.json is not among its own digests
        os.replace(copy.with_name(copy.name + ".tmp"), copy)
    return copy


def point(link: Path, target: Path) -> None:
    """Switch the symlink `link` to `target` atomically (a rename over it), as `ln -s` + `mv -T` do."""
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.name)
    os.replace(tmp, link)
    print(f"{time.strftime('%H:%M:%S')} {link} -> {target.name}", file=sys.stderr, flush=True)


def swap_run(bundle: Path, script: Path, connections: int, seconds: int, swap_at: float, serve_options: list[str]) -> dict:
    """wrk for `seconds` against a server on a symlink to `bundle` with --watch, switched to a copy `swap_at` s in."""
    copy = bundle_copy(bundle)
    link = bundle.with_name("current")
    point(link, bundle)
    process, url = start_server(link, False, ["--watch", *serve_options])
    try:
        run_wrk(url, script, 1, 2)  # warm-up
        timer = threading.Timer(swap_at, point, (link, copy))
        load = os.getloadavg()[0]
        print(f"{time.strftime('%H:%M:%S')} wrk starts", file=sys.stderr, flush=True)
        timer.start()
        result = run_wrk(url, script, connections, seconds)
        timer.join()
        with urllib.request.urlopen(f"{url}/metadata", timeout=60) as response:
            about = json.loads(response.read())
    finally:
        code = stop_server(process)
    return {"result": result, "reloads": about["reloads"], "serving": about["bundle"]["name"], "exit": code, "load": load}


def request_floor(bundle: Path, clicks: float, exact: bool, batch: int, rates: tuple[float, float]) -> tuple[float, str]:
    """(requests/s at the machine's floor, how it is made up) of one session of `clicks` clicks answered by `bundle`:
    the encoder's least arithmetic (every block over every click but the last block, which needs keys and values
    of the earlier clicks and everything else of the newest only: 2 x (12 (blocks - 1) + 4) d^2 per click + 8 d^2),
    then the index's or the exact scoring's. An ivf query compares with every centroid (2 nlist D FLOPs) and
    reads the vectors of nprobe lists (n / nlist each, D = d + 1 coordinates, 4 bytes each, 2 in ivf-fp16, whose
    D is padded to a multiple of 8): at 1.8M items 8.6 MB a query (4.5 MB), more than any cache, so that part is
    memory traffic; exact scoring multiplies a batch of `batch` sessions by the whole table at once (2 n D FLOPs
    a session, the table's bytes shared by the batch)."""
    config = json.loads((bundle / "config.json").read_text())
    d, blocks, n = config["model"]["hidden_size"], config["model"]["num_layers"], config["n_items"]
    flops = 2 * (12 * (blocks - 1) + 4) * d * d * clicks + 2 * 8 * d * d
    encoder = flops
    width = d + 1  # the index's vectors carry the item's bias
    if exact:
        flops += 2 * n * width
        moved = 4 * n * width / batch
        part = f"exact {2 * n * width / 1e6:,.0f} MFLOP + table {moved / 1e6:,.1f} MB"
    else:
        index = config["index"]
        nlist, nprobe, width = index["build"]["nlist"], index["search"]["nprobe"], index["dimension"]
        scanned = min(nprobe, nlist) * n / nlist
        flops += 2 * nlist * width + 2 * scanned * width
        moved = (2 if index["factory"].endswith("SQfp16") else 4) * scanned * width
        part = f"{index['kind']} {(2 * nlist * width + 2 * scanned * width) / 1e6:,.1f} MFLOP + {moved / 1e6:,.1f} MB"
    seconds = flops / rates[0] + moved / rates[1]
    return 1.0 / seconds, f"encoder {encoder / 1e6:,.1f} MFLOP, {part}: {1e3 * seconds:.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="1800000,20000", help="catalogue sizes, comma-separated")
    parser.add_argument("--concurrency", default="1,8,64", help="concurrent clients (connections), comma-separated")
    parser.add_argument("--duration", type=int, default=15, help="seconds of load per cell")
    parser.add_argument("--index", default="ivf-fp16", help="index kind of the synthetic bundles")
    parser.add_argument("--index-param", action="append", default=[], help="NAME=VALUE build/search parameter of the index (repeatable)")
    parser.add_argument("--serve-option", action="append", default=[], help="an option passed to tron serve, e.g. --max-batch=128 (repeatable)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tron-serve-bench", help="where the bundles are built and kept")
    parser.add_argument("--sessions", type=int, default=2000, help="distinct random request bodies")
    parser.add_argument("--swap", action="store_true", help="measure the load across a hot swap instead (see above)")
    parser.add_argument("--swap-at", type=float, default=5.0, help="seconds into the wrk run at which the bundle path is switched")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk: apt-get install wrk")
    args.workdir.mkdir(parents=True, exist_ok=True)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    rates = machine_rates(torch.device("cpu"))
    rows = []
    floors = []
    http_alone: list[tuple[int, float, float]] = []
    max_batch = next((int(option.split("=", 1)[1]) for option in args.serve_option if option.startswith("--max-batch=")), 64)
    for n_items in [int(n) for n in args.items.split(",")]:
        bundle = synthetic_bundle(args.workdir, n_items, args.index, tuple(args.index_param))
        generator = np.random.default_rng(1)
        bodies = [
            json.dumps(json.dumps({"items": generator.integers(1, n_items + 1, int(generator.integers(1, 21))).tolist(), "k": 20}))
            for _ in range(args.sessions)
        ]
        script = args.workdir / f"requests-{n_items}.lua"
        script.write_text(REQUESTS % ", ".join(bodies) + DONE)
        clicks = float(np.mean([len(json.loads(json.loads(body))["items"]) for body in bodies]))
        if args.swap:
            swapped = swap_run(bundle, script, concurrencies[0], args.duration, swap_at=args.swap_at, serve_options=args.serve_option)
            result, last = swapped["result"], swapped["reloads"]["last"] or {}
            print(
                f"\ntron serve --watch across a swap: {n_items:,} items, {args.index}, concurrency {concurrencies[0]}, wrk {args.duration} s, switched at"
                f" {args.swap_at:g} s; load average {swapped['load']:.1f} at the start; {os.cpu_count()} cores, torch {torch.__version__}\n"
                f"requests/s {result['requests'] / result['seconds']:.1f}, p50 {result['p50'] / 1000:.1f} ms, p95 {result['p95'] / 1000:.1f} ms,"
                f" p99 {result['p99'] / 1000:.1f} ms, errors {result['socket_errors'] + result['non_2xx']};"
                f" reloads {swapped['reloads']['count']} (failed {swapped['reloads']['failed']}), the last at {last.get('at')} taking {last.get('seconds')} s;"
                f" serving {swapped['serving']} after; tron serve exited {swapped['exit']} on SIGTERM"
            )
            continue
        for exact in (False, True):
            process, url = start_server(bundle, exact, args.serve_option)
            try:
                run_wrk(url, script, 1, 2)  # warm-up: pages of the table and the index touched, threads started
                for connections in concurrencies:
                    result = run_wrk(url, script, connections, args.duration)
                    floor, made_of = request_floor(bundle, clicks, exact=exact, batch=min(connections, max_batch), rates=rates)
                    rows.append(
                        {
                            "items": n_items,
                            "scoring": "exact" if exact else args.index,
                            "concurrency": connections,
                            "requests/s": result["requests"] / result["seconds"],
                            "p50 ms": result["p50"] / 1000,
                            "p95 ms": result["p95"] / 1000,
                            "p99 ms": result["p99"] / 1000,
                            "errors": result["socket_errors"] + result["non_2xx"],
                            "floor requests/s": floor,
                        }
                    )
                    floors.append(f"{n_items:,} items, {rows[-1]['scoring']}, concurrency {connections}: {made_of}")
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                if not exact:  # the HTTP path alone: GET /health, which touches neither the model nor the index
                    health = args.workdir / "health.lua"
                    health.write_text(HEALTH + DONE)
                    result = run_wrk(url, health, max(concurrencies), args.duration)
                    http_alone.append((n_items, result["requests"] / result["seconds"], result["p99"] / 1000))
            finally:
                code = stop_server(process)
            print(f"tron serve exited {code} on SIGTERM", file=sys.stderr)
    if args.swap:
        return
    cores = os.cpu_count()
    print(f"\ntron serve, SASRec d=200 2 blocks (random weights), k=20, wrk {args.duration}s per cell, {cores} cores, torch {torch.__version__}")
    print(f"machine: {describe(*rates)}; floor of a request: its arithmetic and memory traffic at those rates, on all cores")
    print("| items | scoring | concurrency | requests/s | p50 ms | p95 ms | p99 ms | errors | floor requests/s | fraction of the floor |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['items']:,} | {row['scoring']} | {row['concurrency']} | {row['requests/s']:.1f} | {row['p50 ms']:.1f} | {row['p95 ms']:.1f}"
            f" | {row['p99 ms']:.1f} | {row['errors']} | {row['floor requests/s']:,.0f} | {row['requests/s'] / row['floor requests/s']:.0%} |"
        )
    for n_items, rate, p99 in http_alone:
        print(f"the HTTP path alone (GET /health, {max(concurrencies)} clients, {n_items:,}-item server): {rate:,.0f} requests/s, p99 {p99:.1f} ms")
    for line in floors:
        print(f"floor of a request, {line}")


if __name__ == "__main__":
    main()
