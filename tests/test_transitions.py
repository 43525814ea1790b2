"""The transition prior (`--transition-weight`): its counts, its sparse bonus against a dense reading of the
formula, and its path through train, evaluate, export, recommend and an item index."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from tests.helpers import invoke, tiny_train_args
from tron_cli.artifacts.sessions import Sessions
from tron_cli.inference import transitions
from tron_cli.inference.blends import Bonus, Context, combine
from tron_cli.inference.scorer import Scorer
from tron_cli.inference.scoring import top_among, top_items
from tron_cli.inference.transitions import Transitions
from tron_cli.models.sasrec import SASRec, SASRecConfig


def _sessions(rows: list[list[int]]) -> Sessions:
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    items = np.concatenate([np.asarray(r) for r in rows]).astype(np.int32)
    return Sessions(np.arange(len(rows)), offsets, items, np.zeros(len(items), dtype=np.int64))


SESSIONS = [[1, 2, 3, 2], [2, 3], [5, 1, 2], [4], [3, 2, 2, 6]]
N = 7


def _dense(weight: float, smoothing: float) -> torch.Tensor:
    """(N+1, N+1) bonus[previous, next] straight from the formula, counting pairs in Python."""
    counts = np.zeros((N + 1, N + 1))
    for row in SESSIONS:
        for a, b in itertools.pairwise(row):
            counts[a, b] += 1
    leaving = counts.sum(1, keepdims=True)
    probability = np.divide(counts, leaving, out=np.zeros_like(counts), where=leaving > 0)
    return torch.from_numpy(weight * np.log1p(probability / smoothing)).float()


def _prior(weight: float = 1.5, smoothing: float = 0.1) -> Transitions:
    keys, probabilities = transitions.fit(_sessions(SESSIONS), N)
    return Transitions(keys, probabilities, N, weight, smoothing)


def test_fit_counts_consecutive_clicks_within_sessions_only():
    keys, probabilities = transitions.fit(_sessions(SESSIONS), N)
    pairs = {(int(k) // (N + 1), int(k) % (N + 1)): float(p) for k, p in zip(keys, probabilities)}
    # 2 is followed by 3 twice, by 2 once and by 6 once; 4 (a lone click) and 6 (last) lead nowhere; 3 -> 5 never
    # happens although session 2 follows session 1 in the flat array
    assert pairs[(2, 3)] == pytest.approx(1 / 2) and pairs[(2, 2)] == pytest.approx(1 / 4) and pairs[(2, 6)] == pytest.approx(1 / 4)
    assert (3, 5) not in pairs and not any(a in (4, 6) for a, _ in pairs)
    assert bool((keys[1:] > keys[:-1]).all())


def _last(previous: list[int]) -> Context:
    """Rows whose sessions are their one last click (0: none)."""
    return Context.of_windows(torch.tensor(previous)[:, None])


def _bonus(prior: Transitions, context: Context) -> Bonus:
    return combine([(prior.weight, prior.part(context))], N, "cpu")


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_chunked_bonus_and_pair_bonus_match_the_formula(chunk):
    prior, dense = _prior(), _dense(1.5, 0.1)
    previous = torch.tensor([2, 0, 4, 3, 1, 7])  # padding and items that lead nowhere get no bonus
    bonus = _bonus(prior, _last(previous.tolist()))
    parts = [bonus.add_to_chunk(torch.zeros(len(previous), min(chunk, N + 1 - s)), s) for s in range(1, N + 1, chunk)]
    assert torch.allclose(torch.cat(parts, 1), dense[previous, 1:])
    items = torch.tensor([[3, 2, 0], [1, 1, 1], [5, 4, 3], [2, 6, 1], [2, 3, 4], [7, 1, 2]])
    rows = torch.arange(len(items))[:, None].expand_as(items)
    assert torch.allclose(bonus.lookup(N, rows, items), torch.where(items > 0, dense[previous[:, None], items], 0.0))


def test_best_successors_are_ordered_by_bonus():
    best = _bonus(_prior(), _last([2, 4, 3])).best_items(3, 2)
    assert best[0, 0].item() == 3 and best[0, 1].item() in (2, 6)  # 1/2 before the two 1/4
    assert best[1].tolist() == [0, 0] and best[2].tolist() == [2, 0]


def test_top_items_and_top_among_add_the_prior():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(hidden_size=8, max_length=4), n_items=N).eval()
    hidden = torch.randn(3, 8)
    previous = torch.tensor([2, 5, 0])
    plain = model.score_all(hidden)
    scorer = Scorer(model, (_prior(weight=4.0),))
    expected = plain + _dense(4.0, 0.1)[previous, 1:]
    scores, ids = top_items(scorer, hidden, 3, budget=3, context=_last(previous.tolist()))  # chunks of three items
    assert torch.allclose(scores, expected.gather(1, ids - 1)) and torch.allclose(scores, expected.topk(3, 1).values)
    subset = torch.tensor([1, 3, 6])
    scores, ids = top_among(scorer, hidden, 2, subset, context=_last(previous.tolist()))
    assert torch.allclose(scores, expected[:, subset - 1].topk(2, 1).values)
    assert torch.equal(top_items(scorer, hidden, 3)[0], plain.topk(3, 1).values)  # no last click: no bonus


def _metrics(*args: str) -> dict:
    result = invoke("evaluate", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_train_evaluate_export_recommend_with_the_prior(tiny_dataset, tmp_path):
    common = [str(tiny_dataset), *tiny_train_args(), "--epochs", "1", "--overfit-batches", "3"]
    plain, primed = tmp_path / "plain", tmp_path / "primed"
    assert invoke("train", *common, "--out", str(plain)).exit_code == 0
    result = invoke("train", *common, "--transition-weight", "2", "--out", str(primed))
    assert result.exit_code == 0, result.stderr
    assert (primed / transitions.FILE).is_file() and not (plain / transitions.FILE).exists()
    # the prior is never in the loss: the same weights, and counted at evaluation it scores as counted in training
    with_prior = _metrics(str(primed))
    assert with_prior["transition_weight"] == 2.0
    assert _metrics(str(plain), "--transition-weight", "2")["mrr@20"] == pytest.approx(with_prior["mrr@20"], abs=1e-12)
    without = _metrics(str(primed), "--transition-weight", "0")
    assert without["mrr@20"] == pytest.approx(_metrics(str(plain))["mrr@20"], abs=1e-12)
    assert with_prior["mrr@20"] != pytest.approx(without["mrr@20"])

    bundle = tmp_path / "bundle"
    result = invoke("export", str(primed), "--out", str(bundle))
    assert result.exit_code == 0, result.stderr
    section = {"blends": [{"kind": "transitions", "weight": 2.0, "smoothing": 0.03, "file": transitions.FILE}]}
    assert json.loads((primed / "config.json").read_text())["scorer"] == section  # one schema in runs and bundles
    assert json.loads((bundle / "config.json").read_text())["scorer"] == section
    assert _metrics(str(bundle), "--data", str(tiny_dataset))["mrr@20"] == pytest.approx(with_prior["mrr@20"], abs=1e-12)
    session = json.dumps({"session": 1, "items": [int(i) for i in _a_session(tiny_dataset)]}) + "\n"
    answers = [invoke("recommend", str(where), "-k", "10", input=session) for where in (primed, bundle, plain)]
    assert all(answer.exit_code == 0 for answer in answers)
    assert answers[0].stdout == answers[1].stdout != answers[2].stdout

    # runs and bundles written before the scorer section kept the prior in train options or a `transitions` object
    for where, legacy in ((primed, {}), (bundle, {"transitions": {"weight": 2.0, "smoothing": 0.03}})):
        document = json.loads((where / "config.json").read_text())
        del document["scorer"]
        (where / "config.json").write_text(json.dumps({**document, **legacy}))
        assert invoke("recommend", str(where), "-k", "10", input=session).stdout == answers[0].stdout

    result = invoke("export", str(primed), "--out", str(tmp_path / "graph"), "--format", "onnx")
    assert result.exit_code == 2 and "transitions 2" in result.stderr and not (tmp_path / "graph").exists()
    (bundle / transitions.FILE).write_bytes(b"damaged")
    result = invoke("recommend", str(bundle), input=session)
    assert result.exit_code == 1 and transitions.FILE in result.stderr and "Traceback" not in result.stderr


def _a_session(dataset) -> list[int]:
    from tron_cli.artifacts.sessions import read_dataset

    read = read_dataset(dataset)
    items = read.items().column("id").to_pylist()
    test = read.sessions("test")
    return [items[i - 1] for i in test.items[test.offsets[0] : test.offsets[1]]]


def test_an_item_index_fetches_the_last_clicks_successors(tiny_dataset, tmp_path):
    pytest.importorskip("faiss")
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    result = invoke("train", str(tiny_dataset), *tiny_train_args(), "--epochs", "1", "--overfit-batches", "3", "--transition-weight", "20", "--out", str(run))
    assert result.exit_code == 0, result.stderr
    assert invoke("export", str(run), "--out", str(bundle), "--index", "hnsw").exit_code == 0
    compared = _metrics(str(bundle), "--data", str(tiny_dataset), "--retrieval", "index")
    # a weight this large puts the successors first, which an index of the network's vectors alone would miss
    assert compared["overlap@20"] > 0.99
    assert compared["index"]["mrr@20"] == pytest.approx(compared["exact"]["mrr@20"], abs=0.01)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--transition-weight", "-1"], "--transition-weight must be a finite number >= 0"),
        (["--transition-smoothing", "0"], "--transition-smoothing must be a positive number"),
        (["--transition-weight", "nan"], "'nan' is not a finite number"),
    ],
)
def test_bad_prior_settings_are_usage_errors(tiny_dataset, tmp_path, flags, message):
    result = invoke("train", str(tiny_dataset), *tiny_train_args(), *flags, "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and message in result.stderr and not (tmp_path / "run").exists()


def test_evaluate_refuses_a_weight_for_a_baseline(tiny_dataset):
    result = invoke("evaluate", "--baseline", "popular", "--data", str(tiny_dataset), "--transition-weight", "1")
    assert result.exit_code == 2 and "baseline has none" in result.stderr
