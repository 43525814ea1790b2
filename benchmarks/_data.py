"""OTTO-shaped synthetic datasets for the benchmarks, written straight into the artifact contract.

Zipf-like item popularity (exponent 1.05), OTTO-like session lengths (2 + lognormal: median 6, mean about 16,
at most 500), any catalogue size. Items are drawn independently: the benchmarks measure speed, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from tron_cli.artifacts.documents import read_json, write_json
from tron_cli.artifacts.files import atomic_directory
from tron_cli.artifacts.sessions import Sessions, catalogue_fingerprint, write_items, write_sessions


def sessions(n_sessions: int, n_items: int, rng: np.random.Generator) -> Sessions:
    lengths = np.minimum(2 + np.floor(np.exp(rng.normal(np.log(4.4), 1.6, n_sessions))), 500).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    popularity = 1.0 / np.arange(1, n_items + 1) ** 1.05
    cdf = np.cumsum(popularity / popularity.sum())
    items = (np.searchsorted(cdf, rng.random(offsets[-1])) + 1).clip(1, n_items).astype(np.int32)
    ts = np.arange(offsets[-1], dtype=np.int64) * 1000
    return Sessions(np.arange(n_sessions, dtype=np.int64), offsets, items, ts)


def write_dataset(directory: Path, n_sessions: int, n_items: int, n_test: int = 0, seed: int = 0) -> Path:
    """A dataset dir with train (and test) splits, reused when it exists with the same shape."""
    directory = Path(directory)
    if (directory / "dataset.json").is_file():
        info = read_json(directory / "dataset.json", "dataset")
        if info["n_items"] == n_items and info["counts"]["train"]["sessions"] == n_sessions and info["counts"].get("test", {}).get("sessions", 0) == n_test:
            return directory
    rng = np.random.default_rng(seed)
    splits = {"train": sessions(n_sessions, n_items, rng)}
    if n_test:
        splits["test"] = sessions(n_test, n_items, rng)
    counts = np.bincount(splits["train"].items, minlength=n_items + 1)[1:]
    raw_ids = pa.array(np.arange(n_items, dtype=np.int64))
    with atomic_directory(directory, force=True) as tmp:
        for name, split in splits.items():
            write_sessions(tmp / f"{name}.parquet", split)
        write_items(tmp / "items.parquet", raw_ids, counts)
        write_json(
            tmp / "dataset.json",
            {
                "name": directory.name,
                "n_items": n_items,
                "catalogue_sha256": catalogue_fingerprint(raw_ids),
                "targets": "all",
                "splits": list(splits),
                "counts": {k: {"sessions": len(v), "events": v.n_events, "targets": v.n_events - len(v)} for k, v in splits.items()},
                "source": {"preset": "benchmark", "files": []},
                "parameters": {},
            },
            kind="dataset",
        )
    return directory
