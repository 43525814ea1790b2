"""The item index in a bundle (`tron export --index`), retrieval with filters through it and exactly, `tron recommend`
and `tron evaluate --retrieval index` with it, and bundles refused when a file differs from its recorded sha256."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import invoke
from tron_cli.inference.index import INDEXES, item_points, query_points
from tron_cli.inference.predictor import load_predictor
from tron_cli.inference.retrieval import Filters, Retriever
from tron_cli.inference.scorer import Scorer


@pytest.fixture(scope="module")
def indexed(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """The tiny run exported once per index kind (read-only)."""
    root = tmp_path_factory.mktemp("indexed")
    bundles = {}
    for kind in INDEXES.names():
        out = root / kind
        result = invoke("export", str(tiny_model[0]), "--out", str(out), "--index", kind, "--json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["index"] == kind
        bundles[kind] = out
    return bundles


def test_index_file_parameters_and_sha256_are_in_the_config(indexed):
    config = json.loads((indexed["hnsw"] / "config.json").read_text())
    assert config["index"]["kind"] == "hnsw" and config["index"]["file"] == "index.faiss"
    assert config["index"]["build"] == {"m": 32, "ef_construction": 128} and config["index"]["search"] == {"ef_search": 128}
    assert set(config["sha256"]) == {"index.faiss", "items.parquet", "model.safetensors"}
    assert (indexed["hnsw"] / "index.faiss").read_bytes()[:4] != b"\x80\x04\x95"[:4]  # faiss's format, not a pickle
    ivf = json.loads((indexed["ivf"] / "config.json").read_text())["index"]
    assert ivf["build"]["nlist"] >= 1 and ivf["search"] == {"nprobe": 32}


@pytest.mark.parametrize("width", [None, 16])
def test_points_and_queries_give_the_models_scores(width):
    generator = np.random.default_rng(0)
    table, bias, hidden = generator.normal(size=(50, 8)), generator.normal(size=50), generator.normal(size=(3, 8))
    points, queries = item_points(table, bias, width), query_points(hidden, width)
    assert points.shape[1] == queries.shape[1] == (width or 9)
    np.testing.assert_allclose(queries @ points.T, hidden @ table.T + bias, rtol=1e-5, atol=1e-5)


def test_a_16_bit_index_holds_coordinates_padded_to_a_multiple_of_8(indexed):
    """faiss scans 16-bit codes 8 coordinates at a time: the tiny model's d + 1 coordinates are padded with zeros."""
    from tron_cli.inference.index import require_faiss

    config = json.loads((indexed["ivf-fp16"] / "config.json").read_text())
    d = config["model"]["hidden_size"]
    index = require_faiss().read_index(str(indexed["ivf-fp16"] / "index.faiss"))
    assert config["index"]["factory"].endswith(",SQfp16") and index.d == config["index"]["dimension"] == -(-(d + 1) // 8) * 8 > d + 1


def _naive(model, hidden, k, seen, allow=None, deny=None):
    """Brute-force top-k lists (dense ids) honouring seen items, an allow list and a deny list."""
    scores = model.score_all(hidden).detach().numpy()
    out = []
    for row in range(len(hidden)):
        ranked = [int(i) + 1 for i in np.argsort(-scores[row], kind="stable")]
        ranked = [i for i in ranked if i not in seen[row] and (allow is None or i in allow) and (deny is None or i not in deny)]
        out.append(ranked[:k])
    return out


@pytest.mark.parametrize("kind", INDEXES.names())
@pytest.mark.parametrize("filtered", ["none", "deny", "allow", "allow-small"])
def test_retrieval_through_the_index_honours_seen_items_and_filters(indexed, kind, filtered):
    predictor = load_predictor(
        indexed[kind], torch.device("cpu"), index_params=("ef_search=8",) if kind == "hnsw" else ("nprobe=1",) if kind.startswith("ivf") else ()
    )
    model, n = predictor.model, predictor.model.n_items
    generator = torch.Generator().manual_seed(1)
    hidden = model.last_hidden(torch.randint(1, n + 1, (16, 6), generator=generator)).detach()
    seen = [set(torch.randint(1, n + 1, (30,), generator=generator).tolist()) for _ in range(16)]
    rows = torch.tensor([r for r in range(16) for _ in seen[r]])
    items = torch.tensor([i for r in range(16) for i in seen[r]])
    rng = np.random.default_rng(2)
    allow = deny = None
    if filtered == "deny":
        deny = np.unique(rng.choice(np.arange(1, n + 1), n // 2, replace=False))
    elif filtered == "allow":
        allow = np.unique(rng.choice(np.arange(1, n + 1), n // 2, replace=False))
    elif filtered == "allow-small":
        allow = np.unique(rng.choice(np.arange(1, n + 1), 12, replace=False))
    k = 10
    scores, ids = predictor.retriever.top(hidden, k, (rows, items), Filters(allow, deny))
    expected = _naive(model, hidden, k, seen, None if allow is None else set(allow.tolist()), None if deny is None else set(deny.tolist()))
    for row in range(16):
        got = [i for i in ids[row].tolist() if i > 0]
        assert len(got) == len(expected[row])  # never short: the index's misses fall back to exact scoring
        assert not set(got) & seen[row]
        assert allow is None or set(got) <= set(allow.tolist())
        assert deny is None or not set(got) & set(deny.tolist())
        finite = scores[row][torch.isfinite(scores[row])]
        np.testing.assert_allclose(finite.numpy(), model.score(hidden[row : row + 1], torch.tensor([got])).detach().numpy()[0], rtol=1e-5, atol=1e-5)
    if kind == "exact":  # brute force in faiss: the same lists as the naive top-k
        assert [[i for i in ids[row].tolist() if i > 0] for row in range(16)] == expected


def test_exact_retriever_equals_the_scoring_core(indexed):
    predictor = load_predictor(indexed["exact"], torch.device("cpu"), exact=True)
    assert predictor.index is None
    model = predictor.model
    hidden = model.last_hidden(torch.randint(1, model.n_items + 1, (5, 4), generator=torch.Generator().manual_seed(3))).detach()
    retriever = Retriever(Scorer(model))
    _, ids = retriever.top(hidden, 7)
    assert ids.tolist() == [row[:7] for row in _naive(model, hidden, 7, [set()] * 5)]


def test_recommend_uses_the_index_and_exact_on_request(indexed, tmp_path):
    lines = "".join(json.dumps({"session": s, "items": [s % 50 + 1, s % 7 + 3]}) + "\n" for s in range(20))
    through = invoke("-v", "recommend", str(indexed["exact"]), "-k", "5", input=lines)
    exact = invoke("-v", "recommend", str(indexed["exact"]), "-k", "5", "--exact", input=lines)
    assert through.exit_code == 0 and exact.exit_code == 0, through.stderr + exact.stderr
    assert "exact index" in through.stderr and "exact scoring" in exact.stderr
    assert [json.loads(line)["items"] for line in through.stdout.splitlines()] == [json.loads(line)["items"] for line in exact.stdout.splitlines()]


def test_recommend_allow_and_deny_files(indexed, tmp_path):
    deny, allow = tmp_path / "deny.txt", tmp_path / "allow.txt"
    first = invoke("recommend", str(indexed["hnsw"]), "-k", "5", input='{"session": 1, "items": [3, 4]}\n')
    top = json.loads(first.stdout)["items"]
    deny.write_text("\n".join(map(str, top[:2])) + "\n\n")
    allow.write_text("\n".join(map(str, [*top[2:], 999999])) + "\n")
    denied = json.loads(invoke("recommend", str(indexed["hnsw"]), "-k", "5", "--deny", str(deny), input='{"session": 1, "items": [3, 4]}\n').stdout)
    assert not set(denied["items"]) & set(top[:2]) and len(denied["items"]) == 5
    allowed = json.loads(invoke("recommend", str(indexed["hnsw"]), "-k", "5", "--allow", str(allow), input='{"session": 1, "items": [3, 4]}\n').stdout)
    assert allowed["items"] == top[2:]
    fallback = json.loads(invoke("recommend", str(indexed["hnsw"]), "-k", "3", "--allow", str(allow), input='{"session": 1, "items": [-5]}\n').stdout)
    assert set(fallback["items"]) <= set(top[2:]) and fallback["scores"] is None  # the popular fallback honours filters too


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["--index-param", "nprobe=3"], 2, ("nprobe", "ef_search")),
        (["--index-param", "ef_search=0"], 2, ("at least 1",)),
        (["--exact", "--index-param", "ef_search=9"], 2, ("--exact",)),
        (["--allow", "missing.txt"], 1, ("missing.txt", "does not exist")),
        (["--deny", "bad.txt"], 1, ("bad.txt", "line 2", "not an integer")),
    ],
)
def test_recommend_refuses_bad_index_options(indexed, tmp_path, monkeypatch, args, code, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.txt").write_text("1\nabc\n")
    result = invoke("recommend", str(indexed["hnsw"]), *args, input='{"session": 1, "items": [3]}\n')
    assert result.exit_code == code, result.stderr
    assert all(word in result.stderr for word in words), result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args, words",
    [
        (["--index", "annoy"], ("--index", "annoy")),
        (["--index", "hnsw", "--index-param", "nlist=4"], ("nlist", "m, ef_construction, ef_search")),
        (["--index", "ivf", "--index-param", "nlist=x"], ("non-negative integer",)),
        (["--index-param", "m=4"], ("--index KIND",)),
    ],
)
def test_export_refuses_bad_index_options(tiny_model, tmp_path, args, words):
    result = invoke("export", str(tiny_model[0]), "--out", str(tmp_path / "b"), *args)
    assert result.exit_code == 2, result.stderr
    assert all(word in result.stderr for word in words), result.stderr
    assert not (tmp_path / "b").exists()


def test_evaluate_reports_the_index_next_to_exact_scoring(indexed, tiny_dataset):
    result = invoke("evaluate", str(indexed["exact"]), "--data", str(tiny_dataset), "--retrieval", "index", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["overlap@20"] == pytest.approx(1.0) and report["index"]["recall@20"] == pytest.approx(report["exact"]["recall@20"])
    assert "overlap 1.0000" in result.stderr
    coarse = json.loads(
        invoke("evaluate", str(indexed["hnsw"]), "--data", str(tiny_dataset), "--retrieval", "index", "--index-param", "ef_search=1", "--json").stdout
    )
    assert 0 < coarse["overlap@20"] <= 1 and coarse["index"]["search"] == {"ef_search": 1}
    assert coarse["exact"]["recall@20"] == pytest.approx(report["exact"]["recall@20"])
    plain = invoke("evaluate", str(indexed["exact"]), "--data", str(tiny_dataset), "--json")
    assert json.loads(plain.stdout)["recall@20"] == pytest.approx(report["exact"]["recall@20"], abs=1e-3)  # list ranks vs tie-aware ranks


def test_evaluate_retrieval_index_needs_an_index(tiny_model, tiny_dataset):
    result = invoke("evaluate", str(tiny_model[1]), "--data", str(tiny_dataset), "--retrieval", "index")
    assert result.exit_code == 2 and "has no item index" in result.stderr and "tron export --index" in result.stderr


@pytest.mark.parametrize("file", ["index.faiss", "model.safetensors", "items.parquet"])
def test_a_bundle_whose_file_changed_is_refused(indexed, tmp_path, file):
    bundle = shutil.copytree(indexed["hnsw"], tmp_path / "bundle")
    data = bytearray((bundle / file).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the file still parses, only its digest tells
    (bundle / file).write_bytes(bytes(data))
    result = invoke("recommend", str(bundle), input='{"session": 1, "items": [3]}\n')
    assert result.exit_code == 1 and result.stdout == ""
    assert f"{bundle / file} does not match the sha256" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_bundle_without_recorded_digests_is_refused(indexed, tmp_path):
    bundle = shutil.copytree(indexed["exact"], tmp_path / "bundle")
    config = json.loads((bundle / "config.json").read_text())
    del config["sha256"]["index.faiss"]
    (bundle / "config.json").write_text(json.dumps(config))
    result = invoke("recommend", str(bundle), input='{"session": 1, "items": [3]}\n')
    assert result.exit_code == 1 and "does not record the sha256" in result.stderr
