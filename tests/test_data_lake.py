"""Logs from a data lake (issue #27): datasets that other tools write, and the routes of docs/data-lake.md."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers import invoke, tiny_train_args

# Spark's spelling of a list column: the element is called "element" and everything is nullable
SPARK_LIST = {"int32": pa.list_(pa.field("element", pa.int32())), "int64": pa.list_(pa.field("element", pa.int64()))}


def _catalogue_sha256(ids: list[int]) -> str:
    """docs/artifacts.md: sha256 of the id column's Arrow type name, then the ids as little-endian int64."""
    digest = hashlib.sha256(b"int64")
    digest.update(np.asarray(ids, dtype="<i8").tobytes())
    return digest.hexdigest()


def write_foreign_dataset(root: Path, seed: int = 0) -> Path:
    """A dataset written with pyarrow alone, following docs/artifacts.md ("A dataset written by another tool"):
    no tron.schema tags, Spark's list spelling, clicks only, the minimal dataset.json."""
    rng = np.random.default_rng(seed)
    n_items, raw_ids = 40, [1000 + 7 * k for k in range(40)]
    root.mkdir(parents=True)
    clock = 1_700_000_000_000
    counts = np.zeros(n_items, dtype=np.int64)
    for split, n_sessions in (("train", 120), ("valid", 20), ("test", 20)):
        items, stamps = [], []
        for _ in range(n_sessions):
            first = int(rng.integers(1, n_items + 1))
            clicks = [(first + step - 1) % n_items + 1 for step in range(int(rng.integers(2, 7)))]  # a walk: learnable
            items.append(clicks)
            stamps.append([clock + 1000 * step for step in range(len(clicks))])
            clock += 60_000
            if split == "train":
                np.add.at(counts, np.asarray(clicks) - 1, 1)
        table = pa.table(
            {"session": pa.array(range(len(items)), pa.int64()), "items": pa.array(items, SPARK_LIST["int32"]), "ts": pa.array(stamps, SPARK_LIST["int64"])}
        )
        pq.write_table(table, root / f"{split}.parquet")
    pq.write_table(
        pa.table({"item": pa.array(range(1, n_items + 1), pa.int32()), "id": pa.array(raw_ids, pa.int64()), "count": pa.array(counts, pa.int64())}),
        root / "items.parquet",
    )
    document = {
        "schema": "dataset/2",
        "name": root.name,
        "n_items": n_items,
        "splits": ["train", "valid", "test"],
        "targets": "all",
        "catalogue_sha256": _catalogue_sha256(raw_ids),
    }
    (root / "dataset.json").write_text(json.dumps(document))
    return root


def test_a_dataset_written_with_pyarrow_from_the_doc_trains_evaluates_and_exports(home):
    data = write_foreign_dataset(home / "lake")
    run, bundle = home / "runs" / "lake", home / "bundles" / "lake"
    result = invoke("train", str(data), *tiny_train_args(epochs=1, batch_size=16, batch_negatives=15, uniform_negatives=16, topk=8), "--out", str(run))
    assert result.exit_code == 0, result.stderr
    evaluated = invoke("evaluate", str(run), "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["n_targets"] == sum(len(s) - 1 for s in pq.read_table(data / "test.parquet").column("items").to_pylist())
    exported = invoke("export", str(run), "--out", str(bundle))
    assert exported.exit_code == 0, exported.stderr
    recommended = invoke("recommend", str(bundle), "-k", "3", "--device", "cpu", input='{"session": 1, "items": [1000, 1007]}\n')
    assert recommended.exit_code == 0, recommended.stderr
    assert set(json.loads(recommended.stdout)["items"]) <= {1000 + 7 * k for k in range(40)}
