"""Logs from a data lake (issue #27): datasets that other tools write, and the routes of docs/data-lake.md."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest

from tests.helpers import fixture, invoke, tiny_train_args
from tron_cli.artifacts.sessions import dataset_digest

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


# ------------------------------------------------------------------------------------------- a log in many parts


def events(n_sessions: int = 300, seed: int = 0) -> pl.DataFrame:
    """A small event log over three days: session, item_id, timestamp (ms), event_type, date (the day, ISO)."""
    rng = np.random.default_rng(seed)
    rows = []
    for session in range(n_sessions):
        start = 1_704_067_200_000 + int(rng.integers(0, 3 * 86_400_000))
        for step in range(int(rng.integers(1, 7))):
            kind = "clicks" if rng.random() < 0.85 else "orders"
            rows.append((session, int(rng.integers(1, 60)), start + 30_000 * step, kind))
    frame = pl.DataFrame(rows, schema={"session": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64, "event_type": pl.String}, orient="row")
    frame = frame.sample(fraction=1.0, shuffle=True, seed=seed)  # a lake's rows come in no particular order
    return frame.with_columns(pl.from_epoch("timestamp", time_unit="ms").dt.strftime("%Y-%m-%d").alias("date")).sort("date", maintain_order=True)


def write(frame: pl.DataFrame, path: Path) -> None:
    """One part in the format its name says (parquet, csv.gz, jsonl.zst)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".parquet"):
        frame.write_parquet(path)
    elif path.name.endswith(".csv.gz"):
        path.write_bytes(gzip.compress(frame.write_csv().encode()))
    else:
        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, "zstd") as stream:
            frame.write_ndjson(stream)
        path.write_bytes(sink.getvalue().to_pybytes())


def preprocess(home: Path, given: str, *extra: str) -> Path:
    out = home / "out" / str(abs(hash((given, extra))))
    result = invoke("preprocess", "--train", given, "--name", "lake", "--type-col", "event_type", "--out", str(out), "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.mark.parametrize("suffix", [".parquet", ".csv.gz", ".jsonl.zst"])
def test_a_directory_a_glob_and_a_hive_tree_give_the_dataset_of_the_concatenated_file(home, suffix):
    frame = events()
    write(frame.drop("date"), home / f"single{suffix}")
    thirds = [frame.slice(k * frame.height // 3, frame.height // 3 + (k == 2) * (frame.height % 3)) for k in range(3)]
    for k, part in enumerate(thirds):  # consecutive rows: sessions cross the parts
        write(part.drop("date"), home / "parts" / f"part-{k:05d}-c000{suffix}")
    (home / "parts" / "_SUCCESS").write_text("")  # what Spark leaves beside its parts is no part
    (home / "parts" / f".part-00000-c000{suffix}.crc").write_bytes(b"crc")
    for (day,), part in frame.group_by("date", maintain_order=True):
        write(part.drop("date"), home / "hive" / f"date={day}" / f"part-0{suffix}")
    expected = dataset_digest(preprocess(home, f"single{suffix}"))
    for given in ("parts", f"parts/*{suffix}", "hive", f"hive/date=*/*{suffix}"):
        assert dataset_digest(preprocess(home, given)) == expected, given
    assert dataset_digest(preprocess(home, "hive", "--memory-limit", "64M")) == expected  # one hash partition of the rows at a time


def test_a_hive_partition_column_is_a_column_and_may_be_the_time(home):
    frame = events().with_columns(pl.col("date").str.to_datetime().dt.epoch("ms").alias("timestamp"))  # times of day resolution
    write(frame.drop("timestamp"), home / "single.parquet")
    for (day,), part in frame.group_by("date", maintain_order=True):
        write(part.drop("timestamp", "date"), home / "hive" / f"date={day}" / "part-0.parquet")
    expected = dataset_digest(preprocess(home, "single.parquet", "--time-col", "date"))
    out = preprocess(home, "hive", "--time-col", "date")
    assert dataset_digest(out) == expected
    assert json.loads((out / "dataset.json").read_text())["parameters"]["columns"]["time"] == "date"


def test_compatible_parts_are_unified_and_others_refused_naming_the_part(home):
    frame = events()
    old, new = frame.slice(0, frame.height // 2), frame.slice(frame.height // 2)
    write(frame.drop("date"), home / "single.parquet")
    # an old part: 32-bit items and no event type column (its rows are clicks); a newer one: 64-bit items, typed
    write(old.filter(pl.col("event_type") == "clicks").drop("date", "event_type").with_columns(pl.col("item_id").cast(pl.Int32)), home / "lake" / "a.parquet")
    write(new.drop("date"), home / "lake" / "b.parquet")
    write(pl.concat([old.filter(pl.col("event_type") == "clicks"), new]).drop("date"), home / "concatenated.parquet")
    assert dataset_digest(preprocess(home, "lake")) == dataset_digest(preprocess(home, "concatenated.parquet"))
    write(new.drop("date").with_columns(pl.format("sku-{}", "item_id").alias("item_id")), home / "lake" / "c.parquet")
    result = invoke("preprocess", "--train", "lake", "--name", "refused", "--json")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "c.parquet" in line and "'item_id' holds strings" in line, line
    assert not (home / "data" / "refused").exists()


@pytest.mark.parametrize(
    "layout, needle",
    [("empty-directory", "a directory without any part"), ("only-markers", "a directory without any part"), ("glob", "matches no file")],
)
def test_an_empty_directory_or_glob_says_so(home, layout, needle):
    (home / "events").mkdir()
    if layout == "only-markers":
        (home / "events" / "_SUCCESS").write_text("")
        (home / "events" / ".part-0.parquet.crc").write_text("")
    given = "events/*.parquet" if layout == "glob" else "events"
    result = invoke("preprocess", "--train", given, "--json")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and needle in line and "does not exist" not in line, line
    assert not (home / "data").exists()


def test_dataset_json_records_every_part_or_a_digest_of_many(home):
    frame = events(n_sessions=200)
    for k in range(70):
        write(frame.slice(k * 10, 10).drop("date"), home / "many" / f"part-{k:03d}.parquet")
    few = preprocess(home, "many/part-00*.parquet", "--split", "last")
    files = json.loads((few / "dataset.json").read_text())["source"]["files"]
    assert [Path(entry["path"]).name for entry in files] == [f"part-{k:03d}.parquet" for k in range(10)]
    for entry in files:
        assert entry["size"] == Path(entry["path"]).stat().st_size and entry["sha256"] == hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest()
    many = json.loads((preprocess(home, "many", "--split", "last") / "dataset.json").read_text())["source"]["files"]
    parts = [home / "many" / f"part-{k:03d}.parquet" for k in range(70)]
    listing = "".join(sorted(f"{part.name}\t{part.stat().st_size}\t{hashlib.sha256(part.read_bytes()).hexdigest()}\n" for part in parts))
    assert many == [
        {"path": str(home / "many"), "parts": 70, "size": sum(part.stat().st_size for part in parts), "sha256": hashlib.sha256(listing.encode()).hexdigest()}
    ]


# --------------------------------------------------------------------------------------- bounded memory, same output

# digests (`dataset_digest`) of what tron preprocess wrote before it worked in blocks (commit 6038f8c, in memory)
TODAY = {
    "yoochoose": "b5bcf31d83a126d2a11c246acda579547e3d6843c27269e6b97e0c8800abede5",
    "diginetica": "e71fb9648cc71c8eb688211f285965d732928aedf75929ca900197d8b18692f5",
    "synthetic": "3b4fcddaa6a129e68696398d7fc561a7e4a333bf77986667501a9c5693828f02",
}


@pytest.mark.parametrize("name, raw", [("yoochoose", "sample_yoochoose.dat"), ("diginetica", "sample_train-item-views.csv"), ("synthetic", None)])
def test_bounded_memory_writes_the_dataset_the_in_memory_path_wrote(home, name, raw):
    """The golden samples and a 0.01-scale synthetic log (OTTO's shape, 161,247 sessions over 185,560 items):
    the smallest memory limit (many blocks, small row groups) and the automatic one write what tron wrote before."""
    if raw is None:
        assert invoke("download", "synthetic", "--sessions", "161247", "--items", "185560", "--seed", "0").exit_code == 0
        source = ["synthetic"]
    else:
        source = [name, "--input", str(fixture(f"data/raw/{raw}"))]
    for limit in ("64M", "auto"):
        result = invoke("preprocess", *source, "--memory-limit", limit, "--force", "--json")
        assert result.exit_code == 0, result.stderr
        assert dataset_digest(home / "data" / name) == TODAY[name], limit


def test_sessions_out_of_start_order_go_to_their_row_group_once(home, monkeypatch):
    """A block's sessions are in log order, not by start: a block whose first and last sessions share a row group may
    hold sessions of another between them (OTTO at scale 1.0 wrote 10 sessions twice so). Two sessions a row group."""
    from tron_cli.datasets.blocks import Budget

    starts = [0, 500, 600, 700, 2, 1]  # file order; row groups by start: {0, 5}, {4, 1}, {2, 3}
    rows = [f"{s},{100 + (s + k) % 5},{start + k}" for s, start in enumerate(starts) for k in range(3)]
    (home / "log.csv").write_text("session_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    expected = dataset_digest(preprocess_csv(home))
    monkeypatch.setattr(Budget, "row_group_sessions", property(lambda self: 2))
    out = preprocess_csv(home)
    for split in ("train", "valid", "test"):
        parquet = pq.ParquetFile(out / f"{split}.parquet")
        sessions = parquet.read(columns=["session"]).column("session").to_pylist()
        assert parquet.metadata.num_row_groups == 3 and sorted(sessions) == list(range(6)), (split, sessions)
    assert dataset_digest(out) == expected


def preprocess_csv(home: Path) -> Path:
    result = invoke("preprocess", "--train", str(home / "log.csv"), "--split", "last", "--time-unit", "s", "--force", "--json")
    assert result.exit_code == 0, result.stderr
    return home / "data" / "log"


# ------------------------------------------------------------------------------------------ docs/data-lake.md


def test_route_a_duckdb_writes_hive_partitioned_parts_and_tron_preprocess_reads_them(home):
    """Route (a): DuckDB (as Spark would) writes the events as Parquet parts partitioned by day; tron preprocess
    reads the tree and writes the dataset it writes from one file of the same events."""
    duckdb = pytest.importorskip("duckdb")  # in the dev extra: installed wherever the tests run
    frame = events()
    frame.write_parquet(home / "events.parquet")
    connection = duckdb.connect()
    connection.execute(f"COPY (SELECT * FROM read_parquet('{home / 'events.parquet'}')) TO '{home / 'lake'}' (FORMAT parquet, PARTITION_BY (date))")
    assert sorted(path.name for path in (home / "lake").iterdir()) == sorted(f"date={day}" for day in frame["date"].unique())
    assert dataset_digest(preprocess(home, "lake")) == dataset_digest(preprocess(home, "events.parquet"))


DAY_MS = 86_400_000


def spark_route_in_pyarrow(events: pa.Table, out: Path) -> None:
    """docs/data-lake.md's route (b), the PySpark snippet translated step by step into pyarrow: tron's dataset
    written directly, each split and the catalogue as a directory of parts as Spark writes them."""
    # start = events.groupBy("session").agg(F.min("ts").alias("start")); latest = ...
    start = events.group_by("session").aggregate([("ts", "min")]).rename_columns(["session", "start"])
    latest = pa.compute.max(start["start"]).as_py()
    # events = events.join(start, "session").withColumn("split", when(... "test").when(... "valid").otherwise("train"))
    events = events.join(start, "session")
    is_test = pa.compute.greater_equal(events["start"], latest - DAY_MS)
    is_valid = pa.compute.greater_equal(events["start"], latest - 2 * DAY_MS)
    events = events.append_column("split", pa.compute.if_else(is_test, "test", pa.compute.if_else(is_valid, "valid", "train")))
    # items = known.groupBy(F.col("item").alias("id")).agg(sum(train).alias("count")).withColumn("item", row_number over id)
    known = events.filter(pa.compute.not_equal(events["split"], "test"))
    known = known.append_column("train", pa.compute.cast(pa.compute.equal(known["split"], "train"), pa.int64()))
    items = known.group_by("item").aggregate([("train", "sum")]).rename_columns(["id", "count"]).sort_by("id")
    items = pa.table({"item": pa.array(range(1, items.num_rows + 1), pa.int32()), "id": items["id"], "count": items["count"]})
    for index, rows in enumerate((items.slice(0, items.num_rows // 2), items.slice(items.num_rows // 2))):  # items.orderBy("item").write.parquet
        (out / "items.parquet").mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, out / "items.parquet" / f"part-{index:05d}.snappy.parquet")
    # clicks = events.join(items, "id") ... groupBy("split", "session").agg(sort_array(collect_list(struct("ts", "item"))))
    clicks = events.rename_columns(["session", "id", "ts", "start", "split"]).join(items.select(["id", "item"]), "id", join_type="inner")
    clicks = clicks.sort_by([("split", "ascending"), ("session", "ascending"), ("ts", "ascending"), ("item", "ascending")])
    grouped = clicks.group_by(["split", "session"], use_threads=False).aggregate([("item", "list"), ("ts", "list")])
    grouped = grouped.filter(pa.compute.greater_equal(pa.compute.list_value_length(grouped["item_list"]), 2))  # .where(F.size("clicks") >= 2)
    for split in ("train", "valid", "test"):
        rows = grouped.filter(pa.compute.equal(grouped["split"], split))
        table = pa.table({"session": rows["session"], "items": rows["item_list"], "ts": rows["ts_list"]})
        (out / f"{split}.parquet").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out / f"{split}.parquet" / "part-00000.snappy.parquet")
        (out / f"{split}.parquet" / "_SUCCESS").write_text("")
    # ids = [row.id for row in items.orderBy("item").select("id").collect()]; digest; json.dump(...)
    ids = items["id"].to_pylist()
    digest = hashlib.sha256(b"int64" + struct.pack(f"<{len(ids)}q", *ids)).hexdigest()
    document = {"schema": "dataset/2", "name": "lake", "n_items": len(ids), "splits": ["train", "valid", "test"], "targets": "all", "catalogue_sha256": digest}
    (out / "dataset.json").write_text(json.dumps(document))


def test_route_b_the_spark_snippet_in_pyarrow_writes_a_dataset_that_trains_and_evaluates(home):
    frame = events(n_sessions=400).filter(pl.col("event_type") == "clicks").select("session", pl.col("item_id").alias("item"), pl.col("timestamp").alias("ts"))
    spark_route_in_pyarrow(frame.to_arrow(), home / "lake")
    run = home / "runs" / "lake"
    result = invoke("train", str(home / "lake"), *tiny_train_args(epochs=1, batch_size=16, batch_negatives=15, uniform_negatives=16, topk=8), "--out", str(run))
    assert result.exit_code == 0, result.stderr
    evaluated = invoke("evaluate", str(run), "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["n_targets"] > 0


def test_a_datasets_input_may_be_parts_read_as_their_concatenation(home):
    """--input of a one-file dataset (Yoochoose's clicks, say) as a glob of parts: the dataset of the whole file."""
    lines = fixture("data/raw/sample_yoochoose.dat").read_text().splitlines()
    for k in range(3):
        text = "\n".join(lines[k * len(lines) // 3 : (k + 1) * len(lines) // 3])  # the last line of each without its newline
        (home / "clicks").mkdir(exist_ok=True)
        (home / "clicks" / f"part-{k}.dat").write_text(text)
    whole = invoke("preprocess", "yoochoose", "--input", str(fixture("data/raw/sample_yoochoose.dat")), "--out", str(home / "whole"))
    parted = invoke("preprocess", "yoochoose", "--input", "clicks/*.dat", "--out", str(home / "parted"), "--json")
    assert whole.exit_code == 0 and parted.exit_code == 0, parted.stderr
    assert dataset_digest(home / "parted") == dataset_digest(home / "whole") == TODAY["yoochoose"]
    assert [Path(entry["path"]).name for entry in json.loads((home / "parted" / "dataset.json").read_text())["source"]["files"]] == [
        f"part-{k}.dat" for k in range(3)
    ]
