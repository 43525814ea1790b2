"""`tron recommend`: formats in and out, streaming, unknown ids, errors, and parity with the model scored directly."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.helpers import TINY_GRU, invoke, tiny_train_args

GRU = tiny_train_args(**TINY_GRU)


@pytest.fixture(scope="module")
def sasrec(tiny_model):
    """(run, bundle) of the shared small SASRec (max_length 20); read only."""
    return tiny_model


@pytest.fixture(scope="module")
def gru(tiny_dataset, tmp_path_factory):
    """(run, bundle) of a small GRU4Rec (max_length 20)."""
    root = tmp_path_factory.mktemp("gru")
    run, bundle = root / "runs" / "gru", root / "bundles" / "gru"
    result = invoke("train", str(tiny_dataset), *GRU, "--out", str(run))
    assert result.exit_code == 0, result.stderr
    result = invoke("export", str(run), "--out", str(bundle))
    assert result.exit_code == 0, result.stderr
    return run, bundle


@pytest.fixture(scope="module")
def catalogue(tiny_dataset):
    table = pq.read_table(tiny_dataset / "items.parquet")
    return {
        "raw": np.asarray(table.column("id")),
        "count": np.asarray(table.column("count")),
        "dense": {raw: dense for dense, raw in enumerate(table.column("id").to_pylist(), 1)},
    }


@pytest.fixture(scope="module")
def test_sessions(tiny_dataset, catalogue):
    """Raw-id sessions of the test split, long ones included (longer than max_length 20)."""
    sessions = pq.read_table(tiny_dataset / "test.parquet").column("items").to_pylist()
    chosen = sorted(sessions, key=len)[-6:] + sessions[:14]
    return [catalogue["raw"][np.array(s) - 1].tolist() for s in chosen]


def _lines(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _ndjson(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _reference(run, sessions_dense, k):
    """(ids, scores) of the top k + 1 per session from the model itself: the last 20 clicks, one session at a time."""
    from tron_cli.modelio import load_model

    model = load_model(run)[0]
    ids, scores = [], []
    with torch.no_grad():
        for session in sessions_dense:
            window = torch.tensor([session[-20:]])
            hidden = model.last_hidden(window)
            values, index = torch.topk(model.score_all(hidden)[0], k + 1)
            ids.append(index.numpy() + 1)
            scores.append(values.numpy())
    return np.array(ids), np.array(scores)


def _assert_parity(records, run, sessions_raw, catalogue, k=20):
    dense = [[catalogue["dense"][raw] for raw in s] for s in sessions_raw]
    ref_ids, ref_scores = _reference(run, dense, k)
    ids = np.array([[catalogue["dense"][raw] for raw in r["items"]] for r in records])
    scores = np.array([r["scores"] for r in records])
    np.testing.assert_allclose(scores, ref_scores[:, :k], rtol=1e-5, atol=1e-5)  # printed to 6 significant digits
    close = np.abs(np.diff(ref_scores, axis=1)) <= 1e-5
    tied = np.zeros(ref_scores.shape, dtype=bool)
    tied[:, :-1] |= close
    tied[:, 1:] |= close
    assert np.all((ids == ref_ids[:, :k]) | tied[:, :k])


# --------------------------------------------------------------------------------------------- basics and parity


def test_stdin_to_stdout(sasrec, catalogue):
    raw = catalogue["raw"]
    result = invoke("recommend", str(sasrec[1]), "-k", "20", input=_lines([{"session": 1, "items": raw[[4, 9, 4, 30]].tolist()}]))
    [record] = _ndjson(result)
    assert record["session"] == 1 and len(record["items"]) == 20 and len(set(record["items"])) == 20
    assert set(record["items"]) <= set(raw.tolist())
    assert record["scores"] == sorted(record["scores"], reverse=True)
    assert result.stderr == ""


def test_results_equal_the_model_scored_directly(sasrec, test_sessions, catalogue):
    records = _ndjson(invoke("recommend", str(sasrec[1]), input=_lines({"session": i, "items": s} for i, s in enumerate(test_sessions))))
    assert [r["session"] for r in records] == list(range(len(test_sessions)))
    _assert_parity(records, sasrec[0], test_sessions, catalogue)


def test_a_run_dir_serves_like_its_bundle(sasrec, test_sessions):
    lines = _lines({"session": i, "items": s} for i, s in enumerate(test_sessions[:5]))
    assert invoke("recommend", str(sasrec[0]), input=lines).stdout == invoke("recommend", str(sasrec[1]), input=lines).stdout


def test_gru4rec_bundle(gru, test_sessions, catalogue):
    records = _ndjson(invoke("recommend", str(gru[1]), "--batch-size", "7", input=_lines({"session": i, "items": s} for i, s in enumerate(test_sessions))))
    _assert_parity(records, gru[0], test_sessions, catalogue)


def test_newest_bundle_is_the_default(sasrec, home):
    import shutil

    shutil.copytree(sasrec[1], home / "bundles" / "only")
    result = invoke("recommend", input='{"session": 1, "items": [3]}\n')
    assert len(_ndjson(result)) == 1 and "Warning" not in result.stderr


def test_streaming_keeps_one_line_per_session_in_order(sasrec, test_sessions):
    sessions = [f"s{i}" for i in range(len(test_sessions))]
    lines = _lines({"session": name, "items": s} for name, s in zip(sessions, test_sessions))
    small = _ndjson(invoke("recommend", str(sasrec[1]), "--batch-size", "2", input=lines))
    assert [r["session"] for r in small] == sessions
    whole = _ndjson(invoke("recommend", str(sasrec[1]), input=lines))
    # batches pad windows to different widths: the same items, scores equal up to rounding
    assert [r["items"] for r in small] == [r["items"] for r in whole]
    np.testing.assert_allclose([r["scores"] for r in small], [r["scores"] for r in whole], rtol=1e-5)


# --------------------------------------------------------------------------------------------- formats


def test_otto_events_use_the_datasets_event_types_in_time_order(sasrec, catalogue):
    a, b, c, d = catalogue["raw"][[3, 8, 20, 41]].tolist()
    events = [
        {"aid": a, "ts": 30, "type": "clicks"},
        {"aid": b, "ts": 10, "type": "clicks"},
        {"aid": c, "ts": 20, "type": "carts"},
        {"aid": d, "ts": 20, "type": "clicks"},
    ]
    otto = _ndjson(invoke("recommend", str(sasrec[1]), input=_lines([{"session": 7, "events": events}])))
    plain = _ndjson(invoke("recommend", str(sasrec[1]), input=_lines([{"session": 7, "items": [b, d, a]}])))
    assert otto == plain  # the dataset kept clicks only: the cart is ignored, clicks sorted by ts


def test_parquet_in_and_out(sasrec, test_sessions, tmp_path):
    source = tmp_path / "sessions.parquet"
    pq.write_table(
        pa.table({"session": pa.array(range(100, 100 + len(test_sessions)), pa.int64()), "items": pa.array(test_sessions, pa.list_(pa.int64()))}),
        source,
        row_group_size=4,
    )
    out = tmp_path / "recs.parquet"
    result = invoke("recommend", str(sasrec[1]), "-i", str(source), "-o", str(out), "--batch-size", "3", "-k", "5")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    table = pq.read_table(out)
    assert table.schema.field("session").type == pa.int64()
    assert table.schema.field("items").type == pa.list_(pa.int64()) and table.schema.field("scores").type == pa.list_(pa.float32())
    expected = _ndjson(invoke("recommend", str(sasrec[1]), "-k", "5", input=_lines({"session": 100 + i, "items": s} for i, s in enumerate(test_sessions))))
    assert table.column("session").to_pylist() == [r["session"] for r in expected]
    assert table.column("items").to_pylist() == [r["items"] for r in expected]
    np.testing.assert_allclose(np.array(table.column("scores").to_pylist()), np.array([r["scores"] for r in expected]), rtol=1e-5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_parquet_needs_a_file(sasrec):
    result = invoke("recommend", str(sasrec[1]), "--format", "parquet", input='{"session": 1, "items": [3]}\n')
    assert result.exit_code == 2 and "--output FILE.parquet" in result.stderr


def test_csv_is_the_otto_submission_layout(sasrec, test_sessions, tmp_path):
    out = tmp_path / "submission.csv"
    lines = _lines({"session": 10 + i, "items": s} for i, s in enumerate(test_sessions[:3]))
    result = invoke("recommend", str(sasrec[1]), "-o", str(out), "-k", "4", input=lines)
    assert result.exit_code == 0, result.stderr
    rows = list(csv.reader(io.StringIO(out.read_text())))
    records = _ndjson(invoke("recommend", str(sasrec[1]), "-k", "4", input=lines))
    assert rows[0] == ["session_type", "labels"]
    expected = [[f"{r['session']}_{kind}", " ".join(map(str, r["items"]))] for r in records for kind in ("clicks", "carts", "orders")]
    assert rows[1:] == expected


def test_empty_input(sasrec, tmp_path):
    result = invoke("recommend", str(sasrec[1]), input="")
    assert result.exit_code == 0 and result.stdout == "" and "no session" in result.stderr
    result = invoke("recommend", str(sasrec[1]), "--format", "csv", input="\n")
    assert result.stdout == "session_type,labels\n"
    out = tmp_path / "empty.parquet"
    assert invoke("recommend", str(sasrec[1]), "-o", str(out), input="").exit_code == 0
    assert pq.read_table(out).num_rows == 0


# --------------------------------------------------------------------------------------------- ids


def test_exclude_seen_never_returns_an_input_item(sasrec, test_sessions, catalogue):
    n = len(catalogue["raw"])
    lines = _lines({"session": i, "items": s} for i, s in enumerate(test_sessions[:8]))
    records = _ndjson(invoke("recommend", str(sasrec[1]), "--exclude-seen", "-k", str(n), input=lines))
    for record, session in zip(records, test_sessions[:8]):
        assert not set(record["items"]) & set(session)
        assert len(record["items"]) == n - len(set(session))  # everything else, and nothing excluded
        assert all(np.isfinite(record["scores"]))


def test_unknown_ids_are_skipped_and_counted_once(sasrec, catalogue):
    a, b = catalogue["raw"][[5, 6]].tolist()
    lines = _lines([{"session": 1, "items": [a, 10_000, b]}, {"session": 2, "items": [a]}, {"session": 3, "items": [10_001, b, 10_002]}])
    result = invoke("recommend", str(sasrec[1]), "--batch-size", "1", input=lines)
    records = _ndjson(result)
    assert records[0]["items"] == _ndjson(invoke("recommend", str(sasrec[1]), input=_lines([{"session": 1, "items": [a, b]}])))[0]["items"]
    assert result.stderr.count("Warning") == 1 and "3 unknown item ids skipped in 2 sessions" in result.stderr


def test_a_session_without_known_items_gets_the_most_popular(sasrec, catalogue):
    result = invoke("recommend", str(sasrec[1]), "-k", "5", input=_lines([{"session": 1, "items": [10_000]}, {"session": 2, "items": []}]))
    records = _ndjson(result)
    popular = catalogue["raw"][np.argsort(-catalogue["count"], kind="stable")[:5]].tolist()
    assert [r["items"] for r in records] == [popular, popular]
    assert [r["scores"] for r in records] == [None, None]
    assert "2 sessions had no known item" in result.stderr


def test_numeric_strings_match_an_integer_catalogue(sasrec, catalogue):
    a, b = catalogue["raw"][[2, 11]].tolist()
    as_strings = _ndjson(invoke("recommend", str(sasrec[1]), input=_lines([{"session": 1, "items": [str(a), str(b)]}])))
    assert as_strings == _ndjson(invoke("recommend", str(sasrec[1]), input=_lines([{"session": 1, "items": [a, b]}])))
    result = invoke("recommend", str(sasrec[1]), input=_lines([{"session": 1, "items": [a]}, {"session": 2, "items": [1.5]}]))
    assert result.exit_code == 1 and "stdin:2: items[0] is 1.5, not an integer id" in result.stderr


# --------------------------------------------------------------------------------------------- errors


def test_malformed_line_names_the_line(sasrec):
    result = invoke("recommend", str(sasrec[1]), input='{"session": 1, "items": [3]}\n{"session": 2, "items": [3\n')
    assert result.exit_code == 1
    assert "Error: stdin:2: not valid JSON" in result.stderr and "Traceback" not in result.stderr
    result = invoke("recommend", str(sasrec[1]), input='{"session": 1, "items": [3]}\n\n{"session": 2}\n')
    assert result.exit_code == 1 and 'stdin:3: field "items" is missing' in result.stderr


def test_a_failure_leaves_no_output_file(sasrec, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"session": 1, "items": [3]}\n{"session": 2, "items": [4]}\nnot json\n')
    out = tmp_path / "out.jsonl"
    result = invoke("recommend", str(sasrec[1]), "-i", str(source), "-o", str(out), "--batch-size", "1")
    assert result.exit_code == 1 and f"{source}:3: not valid JSON" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_string_catalogue_lookup_and_id_spelling():
    from tron_cli.inference.catalogue import Catalogue
    from tron_cli.inference.session_input import RecordProblem, raw_ids

    table = pa.table({"item": pa.array([1, 2, 3], pa.int32()), "id": ["b", "a", "10"], "count": [5, 9, 1]})
    catalogue = Catalogue(table)  # not sorted by raw id: looked up through a sorted copy
    assert catalogue.dense(np.array(["a", "zz", "10", "b"])).tolist() == [2, 0, 3, 1]
    assert catalogue.raw_ids(np.array([3, 1])).tolist() == ["10", "b"]
    assert catalogue.by_clicks.tolist() == [2, 1, 3]
    assert raw_ids(["a", 10], False, str) == ["a", "10"]  # integers by their decimal spelling
    with pytest.raises(RecordProblem, match=r"items\[1\] is 1.5, not a string id"):
        raw_ids(["a", 1.5], False, lambda i: f"items[{i}]")


def test_width_groups_put_short_sessions_in_a_narrower_pass_on_a_cpu():
    from tron_cli.inference.predictor import width_groups

    lengths = np.array([20, 1, 1, 20] + [1] * 60)
    groups = width_groups(lengths, torch.device("cpu"))
    assert [(sorted(rows.tolist()), width) for rows, width in groups] == [(sorted(set(range(64)) - {0, 3}), 1), ([0, 3], 20)]
    assert [width for _, width in width_groups(np.full(64, 7), torch.device("cpu"))] == [7]  # nothing to save
    assert [width for _, width in width_groups(lengths, torch.device("cuda"))] == [20]  # a GPU runs one wide pass


@pytest.mark.parametrize("model", ["sasrec", "gru"])
def test_a_batch_in_two_passes_encodes_each_session_as_alone(model, request, test_sessions):
    """Sessions of 1 click and of many, encoded together (the short ones in a narrower pass), have the states each
    gets when it is encoded alone."""
    from tron_cli.inference.predictor import load_predictor, width_groups
    from tron_cli.inference.session_input import Batch

    predictor = load_predictor(request.getfixturevalue(model)[1], torch.device("cpu"))
    long = [s for s in test_sessions if len(s) >= 6][:3]
    sessions = long + [s[:1] for s in test_sessions[:40]]
    assert len(width_groups(np.array([min(len(s), 20) for s in sessions]), torch.device("cpu"))) == 2

    def encoded(group: list[list]) -> torch.Tensor:
        offsets = np.cumsum([0] + [len(s) for s in group]).astype(np.int64)
        batch = Batch([None] * len(group), [""] * len(group), offsets, np.array([i for s in group for i in s], dtype=np.int64))
        return predictor.encode(batch).hidden

    together = encoded(sessions)
    alone = torch.cat([encoded([s]) for s in sessions])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
