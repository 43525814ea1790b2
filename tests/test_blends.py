"""The scorer's blends beyond the transition prior (session kNN, repeats), their contexts, the exact ranks of a grid
of their weights, and the choice of the weights on validation when training ends (never reading test)."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from tests.helpers import invoke, tiny_train_args
from tron_cli.artifacts.sessions import Sessions, read_dataset
from tron_cli.batching import SessionStore
from tron_cli.evaluation.grid import ranks_of_points
from tron_cli.inference import knn
from tron_cli.inference.blends import Bonus, Context, Repeats, combine
from tron_cli.inference.knn import Neighbours
from tron_cli.inference.scorer import Scorer
from tron_cli.inference.scoring import top_among, top_items
from tron_cli.inference.transitions import Transitions
from tron_cli.models.sasrec import SASRec, SASRecConfig

N = 9
SESSIONS = [[1, 2, 3, 2], [2, 3], [5, 1, 2, 8], [4, 4], [3, 2, 2, 6, 9], [7, 5, 1]]


def _sessions(rows: list[list[int]]) -> Sessions:
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    items = np.concatenate([np.asarray(r) for r in rows]).astype(np.int32)
    return Sessions(np.arange(len(rows)), offsets, items, np.zeros(len(items), dtype=np.int64))


def _triples(context: Context) -> list[tuple[int, int, int]]:
    return sorted(zip(context.rows.tolist(), context.items.tolist(), context.recency.tolist()))


def test_the_three_readings_of_a_session_agree():
    store = SessionStore(_sessions(SESSIONS), "cpu")
    positions = torch.tensor([1, 3, 9, 16, 19])  # targets of several sessions, some late in long ones
    by_positions = Context.of_positions(store, positions)
    by_windows = Context.of_windows(store.query_windows(positions, 10))
    rows, index = by_positions.rows, positions[by_positions.rows] - by_positions.recency
    by_clicks = Context.of_clicks(rows, store.items[index], len(positions))
    for other in (by_windows, by_clicks):
        assert _triples(other) == _triples(by_positions) and torch.equal(other.last, by_positions.last)
    assert by_positions.last.tolist() == [1, 3, 2, 6, 5]
    picked = by_positions.select(torch.tensor([3, 0]))
    assert picked.last.tolist() == [6, 1] and {(r, i, k) for r, i, k in _triples(picked) if r == 1} == {(1, 1, 1)}


def test_the_repeat_boost_is_one_over_the_recency_of_the_last_click():
    context = Context.of_windows(torch.tensor([[0, 3, 5, 3, 7]]))
    part = Repeats(1.0).part(context)
    assert dict(zip(part.items.tolist(), part.values.tolist())) == {7: 1.0, 3: 0.5, 5: pytest.approx(1 / 3)}


def test_the_knn_part_is_the_votes_over_their_largest():
    neighbours = Neighbours.counted(_sessions(SESSIONS), N)
    context = Context.of_windows(torch.tensor([[1, 2], [0, 3], [0, 7]]))
    votes, part = neighbours.votes(context, None), neighbours.part(context)
    assert torch.equal(part.rows, votes.rows) and torch.equal(part.items, votes.items)
    for row in range(3):
        mine = votes.rows == row
        assert part.values[mine].max() == 1.0 and torch.allclose(part.values[mine], votes.values[mine] / votes.values[mine].max())
    # row 0 ([1, 2]) shares items with sessions 0, 1, 2, 4, 5: they vote for their other items, 4 and its session not
    assert 9 in part.items[part.rows == 0].tolist() and 4 not in part.items[part.rows == 0].tolist()


def _dense(bonus: Bonus, q: int) -> torch.Tensor:
    out = torch.zeros(q, N + 1, dtype=torch.float64)
    out[bonus.rows, bonus.items] += bonus.values.double()
    return out[:, 1:]


def test_a_scorer_with_every_blend_ranks_as_the_summed_formula():
    torch.manual_seed(0)
    train = _sessions(SESSIONS)
    model = SASRec(SASRecConfig(hidden_size=8, max_length=4), n_items=N).eval()
    blends = (Transitions.counted(train, N, weight=1.5), Neighbours.counted(train, N, weight=2.0, similarity="vsknn"), Repeats(0.7))
    scorer = Scorer(model, blends)
    context = Context.of_windows(torch.tensor([[1, 2, 3], [0, 5, 1], [0, 0, 4], [0, 0, 0]]))
    hidden = torch.randn(4, 8)
    expected = model.score_all(hidden).double() + sum(blend.weight * _dense(blend.part(context), 4) for blend in blends)
    scores, ids = top_items(scorer, hidden, 4, budget=8, context=context)  # chunks of two items
    assert torch.allclose(scores.double(), expected.topk(4, 1).values, atol=1e-5)
    assert torch.allclose(scores.double(), expected.gather(1, ids - 1), atol=1e-5)
    subset = torch.tensor([2, 4, 6, 9])
    scores, _ = top_among(scorer, hidden, 3, subset, context=context)
    assert torch.allclose(scores.double(), expected[:, subset - 1].topk(3, 1).values, atol=1e-5)
    items = torch.tensor([[3, 9], [2, 1], [4, 5], [7, 8]])
    assert torch.allclose(scorer.items(hidden, items, scorer.bonus(context)).double(), expected.gather(1, items - 1), atol=1e-5)
    # without a context, the network alone
    assert torch.equal(top_items(scorer, hidden, 3)[0], model.score_all(hidden).topk(3, 1).values)


def test_a_grids_ranks_are_the_ranks_of_each_weighting():
    generator = torch.Generator().manual_seed(1)
    q, n, cutoff = 40, 30, 5
    dense = torch.randn(q, n, generator=generator).round(decimals=1)  # rounded: ties with the target happen
    targets = torch.randint(1, n + 1, (q,), generator=generator)

    def part() -> Bonus:
        keys = torch.unique(torch.randint(0, q * (n + 1), (200,), generator=generator))
        rows, items = keys // (n + 1), keys % (n + 1)
        keep = items > 0
        return Bonus(rows[keep], items[keep], torch.rand(int(keep.sum()), generator=generator, dtype=torch.float64).round(decimals=1))

    parts = {"a": part(), "b": part()}
    weights = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 2.0], [3.0, 1.0]], dtype=torch.float64)
    ranks = ranks_of_points(dense, targets, parts, ["a", "b"], weights=weights, cutoff=cutoff)
    for g, (a, b) in enumerate(weights.tolist()):
        bonus = combine([(a, parts["a"]), (b, parts["b"])], n, "cpu")
        full = bonus.add_to_chunk(dense.clone(), 1)
        target = full.gather(1, targets[:, None] - 1)
        expected = (full >= target).sum(1) - 1  # pessimistic, the target itself left out
        assert torch.equal(ranks[:, g].clamp(max=cutoff), expected.clamp(max=cutoff))


# ------------------------------------------------------------------------------------------------ through the CLI


def _log(path, sessions: list[list[int]], first_time: int) -> None:
    lines = ["session,item,time"] + [
        f"{first_time + s},{item},{(first_time + s) * 100 + j}" for s, items in enumerate(sessions) for j, item in enumerate(items)
    ]
    path.write_text("\n".join(lines) + "\n")


def _walks(rng: np.random.Generator, successors: np.ndarray, count: int, follow: bool) -> list[list[int]]:
    """Sessions of 6 clicks from random starts; each next click one of its item's successors (`follow`), or an item
    that never follows it."""
    n = len(successors) - 1
    sessions = []
    for _ in range(count):
        walk = [int(rng.integers(1, n + 1))]
        for _ in range(5):
            if follow:
                walk.append(int(rng.choice(successors[walk[-1]])))
            else:
                walk.append(int(rng.choice(np.setdiff1d(np.arange(1, n + 1), [walk[-1], *successors[walk[-1]]]))))
        sessions.append(walk)
    return sessions


@pytest.fixture(scope="module")
def walk_datasets(tmp_path_factory):
    """Two datasets of random walks over 60 items, each item followed by one of 3 fixed successors in train; the
    validation split (the last 20 % of the train sessions) follows them in `helps` and never in `hurts`."""
    root = tmp_path_factory.mktemp("walks")
    rng = np.random.default_rng(0)
    successors = np.concatenate([np.zeros((1, 3), dtype=np.int64), rng.integers(1, 61, size=(60, 3))])
    out = {}
    for name, follow in (("helps", True), ("hurts", False)):
        train = _walks(rng, successors, 800, follow=True) + _walks(rng, successors, 200, follow=follow)
        _log(root / f"{name}-train.csv", train, 0)
        _log(root / f"{name}-test.csv", _walks(rng, successors, 100, follow=True), 10_000)
        result = invoke(
            "preprocess", "--train", str(root / f"{name}-train.csv"), "--test", str(root / f"{name}-test.csv"), "--valid-fraction", "0.2",
            "--out", str(root / name), "--json",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        out[name] = root / name
    return out


def _metrics(*args: str) -> dict:
    result = invoke("evaluate", *args, "-k", "20", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# a weak network (a few steps): what the prior adds decides the ranking
WEAK = tiny_train_args(epochs=1, overfit_batches=2, batch_size=16, batch_negatives=15, uniform_negatives=32, topk=16)


@pytest.mark.parametrize(("name", "helps"), [("helps", True), ("hurts", False)])
def test_training_chooses_the_transition_weight_on_validation(walk_datasets, tmp_path, name, helps):
    run = tmp_path / "run"
    result = invoke("train", str(walk_datasets[name]), *WEAK, "--transition-grid", "0,1,3", "--out", str(run), "--json")
    assert result.exit_code == 0, result.stderr
    blends = json.loads((run / "summary.json").read_text())["blends"]
    values = {point["transition_weight"]: point["mrr@20"] for point in blends["points"]}
    assert blends["grid"]["transition_weight"] == [0.0, 1.0, 3.0] and blends["select_on"] == "recall@20+mrr@20"
    assert (blends["chosen"]["transition_weight"] > 0) == helps
    assert (values[3.0] > values[0.0]) == helps  # the prior moves validation the way the data says
    scorer = json.loads((run / "config.json").read_text())["scorer"]
    assert [blend["kind"] for blend in scorer["blends"]] == (["transitions"] if helps else [])
    # tron evaluate scores with the choice, no flag needed: on validation, the values the choice saw
    valid = _metrics(str(run), "--split", "valid")
    assert valid["recall@20"] == pytest.approx(blends["valid"]["recall@20"], abs=1e-6)
    assert valid["mrr@20"] == pytest.approx(blends["valid"]["mrr@20"], abs=1e-6)
    assert valid.get("transition_weight", 0.0) == blends["chosen"]["transition_weight"]
    assert "valid Recall@20 with blends" in result.stderr


def test_the_choice_never_reads_the_test_split(walk_datasets, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(walk_datasets["helps"], data)
    test = (data / "test.parquet").read_bytes()
    (data / "test.parquet").unlink()  # a read of the test split would fail training
    run = tmp_path / "run"
    grids = ["--transition-grid", "0,1", "--knn-grid", "0,2", "--knn-similarities", "sknn", "--knn-similarities", "vsknn", "--repeat-grid", "0,1"]
    result = invoke("train", str(data), *WEAK, *grids, "--out", str(run))
    assert result.exit_code == 0, result.stderr
    assert len(json.loads((run / "summary.json").read_text())["blends"]["points"]) == 2 * 3 * 2
    (data / "test.parquet").write_bytes(test)
    assert _metrics(str(run))["n_targets"] == 500


def test_knn_and_repeats_travel_to_bundles_recommend_and_the_index(tiny_dataset, tmp_path):
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    flags = ["--knn-weight", "20", "--knn-similarity", "vsknn", "--repeat-weight", "3"]
    result = invoke("train", str(tiny_dataset), *tiny_train_args(epochs=1, overfit_batches=3), *flags, "--out", str(run))
    assert result.exit_code == 0, result.stderr
    blends = json.loads((run / "config.json").read_text())["scorer"]["blends"]
    assert [(b["kind"], b["weight"]) for b in blends] == [("knn", 20.0), ("repeat", 3.0)] and blends[0]["similarity"] == "vsknn"
    assert (run / knn.FILE).is_file()
    index = importlib.util.find_spec("faiss") is not None
    assert invoke("export", str(run), "--out", str(bundle), *(["--index", "hnsw"] if index else [])).exit_code == 0
    bundled = json.loads((bundle / "config.json").read_text())
    assert bundled["scorer"]["blends"] == blends and knn.FILE in bundled["sha256"]
    assert _metrics(str(bundle), "--data", str(tiny_dataset))["mrr@20"] == pytest.approx(_metrics(str(run))["mrr@20"], abs=1e-12)
    plain = _metrics(str(run), "--transition-weight", "0")  # --transition-weight changes only the prior
    assert plain["knn_weight"] == 20.0 and plain["repeat_weight"] == 3.0
    read = read_dataset(tiny_dataset)
    ids = read.items().column("id").to_pylist()
    test = read.sessions("test")
    session = json.dumps({"session": 1, "items": [ids[i - 1] for i in test.items[test.offsets[0] : test.offsets[1]]]}) + "\n"
    answers = [invoke("recommend", str(where), "-k", "10", "--exact", input=session) for where in (run, bundle)]
    assert answers[0].exit_code == 0 and answers[0].stdout == answers[1].stdout
    if index:  # weights this large put the blends' items first, which an index of the network's vectors alone would miss
        compared = _metrics(str(bundle), "--data", str(tiny_dataset), "--retrieval", "index")
        assert compared["overlap@20"] > 0.99
    (bundle / knn.FILE).write_bytes(b"damaged")
    result = invoke("recommend", str(bundle), input=session)
    assert result.exit_code == 1 and knn.FILE in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--transition-grid", "0,-1"], "--transition-grid must hold finite numbers >= 0"),
        (["--knn-grid", "1,x"], "is not a list of numbers"),
        (["--knn-similarities", "cosine"], "'cosine' is not one of"),
        (["--repeat-weight", "-2"], "--repeat-weight must be a finite number >= 0"),
        (["--blend-select-on", "recall@20+hits"], "--blend-select-on 'hits' is not a metric"),
        (["--repeat-grid", "0,1", "--exclude-seen"], "drop --exclude-seen or the grids"),
    ],
)
def test_bad_blend_settings_are_usage_errors(tiny_dataset, tmp_path, flags, message):
    result = invoke("train", str(tiny_dataset), *tiny_train_args(), *flags, "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and message in result.stderr and not (tmp_path / "run").exists()
