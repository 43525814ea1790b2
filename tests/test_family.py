"""The training family beyond TRON: GRU4Rec+, full cross-entropy, gBCE, popularity negatives, logQ, row-sparse optimisers.

Each test would fail if an option silently fell back to another loss, sampler or optimiser.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import invoke, tiny_train_args
from tron_cli.artifacts.sessions import Sessions, read_dataset
from tron_cli.batching import Lanes, SessionStore
from tron_cli.losses import full, sampled
from tron_cli.models.base import ItemScorer
from tron_cli.training.config import TrainConfig
from tron_cli.training.loop import Trainer
from tron_cli.training.negatives import Assembly, EventSlots, LossSpec, full_softmax_loss, per_event
from tron_cli.training.order import epoch_order
from tron_cli.training.sampling import ItemDistribution, Negatives

SMALL = dict(device="cpu", hidden_size=16, uniform_negatives=64, batch_size=16, batch_negatives=15, topk=16, max_length=10)


def _trainer(dataset: Path, tmp_path: Path, **options) -> Trainer:
    config = TrainConfig.create(**{**SMALL, **options})
    return Trainer(config, read_dataset(dataset), tmp_path)


def _first_batch(trainer: Trainer):
    trainer.order = epoch_order(len(trainer.store), "no_shuffling", trainer.generator)
    sequence = trainer.store.tail_windows(trainer.order[: trainer.config.batch_size], trainer.config.max_length + 1)
    inputs, targets = sequence[:, :-1], sequence[:, 1:]
    return inputs, targets, inputs != 0


# ------------------------------------------------------------------------------------------------ full cross-entropy


@pytest.mark.parametrize("chunk", [7, 50, 4096])  # chunks recomputed in backward; the whole catalogue kept from forward
def test_chunked_cross_entropy_equals_plain_cross_entropy(chunk):
    torch.manual_seed(0)
    n, d, e = 50, 8, 13
    hidden = torch.randn(e, d, dtype=torch.float64, requires_grad=True)
    table = torch.randn(n + 1, d, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(n + 1, 1, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, n + 1, (e,))
    chunked = full.full_cross_entropy(hidden, table, bias, targets, chunk=chunk)
    weight = torch.randn(e, dtype=torch.float64)
    (chunked * weight).sum().backward()
    grads = [t.grad.clone() for t in (hidden, table, bias)]
    for t in (hidden, table, bias):
        t.grad = None
    plain = torch.nn.functional.cross_entropy(hidden @ table[1:].T + bias[1:, 0], targets - 1, reduction="none")
    (plain * weight).sum().backward()
    torch.testing.assert_close(chunked, plain, atol=1e-10, rtol=1e-10)
    for got, want in zip(grads, (hidden.grad, table.grad, bias.grad)):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    assert float(grads[1][0].abs().sum()) == 0.0  # padding row untouched


@pytest.mark.parametrize("chunk", [64, 65536])
def test_chunked_cross_entropy_in_float32_to_1e5(chunk):
    torch.manual_seed(1)
    hidden, table = torch.randn(40, 16, requires_grad=True), torch.randn(301, 16, requires_grad=True)
    targets = torch.randint(1, 301, (40,))
    full.full_cross_entropy(hidden, table, None, targets, chunk=chunk).mean().backward()
    got = hidden.grad.clone(), table.grad.clone()
    hidden.grad = table.grad = None
    torch.nn.functional.cross_entropy(hidden @ table[1:].T, targets - 1).backward()
    torch.testing.assert_close(got[0], hidden.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], table.grad, atol=1e-5, rtol=1e-5)


_PEAK = textwrap.dedent(
    """
    import resource, sys, torch
    from tron_cli.losses import full
    n, mode = int(sys.argv[1]), sys.argv[2]
    e, d = 2048, 16
    hidden = torch.randn(e, d, requires_grad=True)
    table = torch.randn(n + 1, d, requires_grad=True)
    targets = torch.randint(1, n + 1, (e,))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "chunked":
        loss = full.full_cross_entropy(hidden, table, None, targets, chunk=4096).mean()
    else:
        loss = torch.nn.functional.cross_entropy(hidden @ table[1:].T, targets - 1)
    loss.backward()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
    """
)


def _peak_bytes(n: int, mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PEAK, str(n), mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_chunked_cross_entropy_memory_is_bounded_by_the_chunk():
    scores = 2048 * 200_000 * 4  # what one [E, N] fp32 score matrix would take
    chunked = _peak_bytes(200_000, "chunked")
    plain = _peak_bytes(200_000, "plain")
    assert plain > scores  # the naive path materialises [E, N] (and its gradient)
    assert chunked < 0.25 * scores, (chunked, scores)


def test_ce_loss_is_what_training_computes(tiny_dataset, tmp_path):
    trainer = _trainer(tiny_dataset, tmp_path, loss="ce", topk=0)
    inputs, targets, mask = _first_batch(trainer)
    events = EventSlots.select(mask, targets)
    hidden = trainer.hidden(inputs, events)
    expected = full_softmax_loss(trainer.model, hidden, events, 10**9)
    assert trainer.loss(hidden, inputs, events).item() == pytest.approx(expected.item(), rel=1e-6)
    assert expected.item() == pytest.approx(np.log(trainer.n_items), rel=0.2)  # untrained: about log N


# ------------------------------------------------------------------------------------------------ gbce, dispatch


@pytest.mark.parametrize("loss", ["ssm", "bce", "bpr-max", "gbce"])
def test_each_loss_name_dispatches_to_its_function(loss):
    torch.manual_seed(2)
    pos, neg = torch.randn(9), torch.randn(9, 4)
    valid = torch.ones_like(neg, dtype=torch.bool)
    direct = {
        "ssm": sampled.ssm(pos, neg, valid),
        "bce": sampled.bce(pos, neg, valid),
        "bpr-max": sampled.bpr_max(pos, neg, valid, 0.3),
        "gbce": sampled.gbce(pos, neg, valid, 0.6, 100),
    }
    got = per_event(LossSpec(loss=loss, topk=0, mask_hits=True, logq=0.0, options={"bpr_penalty": 0.3, "gbce_t": 0.6}, n_items=100), pos, neg, valid)
    torch.testing.assert_close(got, direct[loss])
    assert all(not torch.allclose(got, other) for name, other in direct.items() if name != loss)


# ------------------------------------------------------------------------------------------------ popularity, logQ


def test_popularity_draws_follow_count_to_the_alpha():
    counts = torch.tensor([0.0, 1, 2, 4, 8, 16, 0, 64], dtype=torch.float64)  # index 0 is padding
    generator = torch.Generator().manual_seed(5)
    draws = ItemDistribution(7, counts, alpha=0.5, device=torch.device("cpu")).sample((400_000,), generator)
    observed = torch.bincount(draws, minlength=8).double()
    expected = counts**0.5
    expected = expected / expected.sum() * len(draws)
    assert observed[0] == 0 and observed[6] == 0  # padding and never-clicked items are never drawn
    chi2 = float(((observed[expected > 0] - expected[expected > 0]) ** 2 / expected[expected > 0]).sum())
    assert chi2 < 22.5  # chi-square, 5 degrees of freedom, p = 0.0004


def test_training_uses_the_popularity_sampler(tiny_dataset, tmp_path):
    trainer = _trainer(tiny_dataset, tmp_path, negative_distribution="popularity", alpha=1.0)
    assert not trainer.distribution.uniform
    draws = trainer.distribution.sample((200_000,), trainer.generator)
    counts = torch.bincount(draws, minlength=trainer.n_items + 1).double()
    catalogue = read_dataset(tiny_dataset).items().column("count").to_numpy()
    popular, rare = int(np.argmax(catalogue)) + 1, int(np.argmin(catalogue)) + 1
    assert counts[popular] > 20 * max(counts[rare], 1)


def test_logq_shifts_each_column_by_log_k_q():
    scorer = ItemScorer(10, 4, True, False)
    hidden = torch.randn(1, 3, 4)
    mask = torch.tensor([[False, True, True]])
    targets = torch.tensor([[0, 2, 3]])
    negatives = Negatives("batchwise", torch.tensor([1, 5, 9]), in_batch=torch.tensor([[7, 8]]), in_batch_valid=torch.ones(1, 2, dtype=torch.bool))
    events = EventSlots.select(mask, targets)
    batch = Assembly(scorer, events.gather(hidden), events, negatives, sparse=False)
    counts = torch.arange(11, dtype=torch.float64)
    log_freq = torch.log(counts / counts.sum()).float()
    uniform = ItemDistribution(10, None, 1.0, torch.device("cpu"))
    shift = batch.log_q(uniform, log_freq)
    assert shift.shape == (2, 5)
    torch.testing.assert_close(shift[:, :3], torch.full((2, 3), float(np.log(3 / 10))))
    torch.testing.assert_close(shift[0, 3:], torch.log(torch.tensor([2 * 7 / 55.0, 2 * 8 / 55.0])))


@pytest.mark.parametrize("style", ["batchwise", "sessionwise", "eventwise"])
@pytest.mark.parametrize("popularity", [False, True])
def test_logq_of_every_column_equals_it_column_by_column(style, popularity):
    """The block-wise logQ of all columns (the `--topk 0` path) is the per-column one, for each way of sharing."""
    generator = torch.Generator().manual_seed(3)
    scorer = ItemScorer(30, 4, True, False)
    mask = torch.tensor([[False, True, True, True], [False, False, True, True]])
    targets = torch.randint(1, 31, (2, 4), generator=generator)
    events = EventSlots.select(mask, targets)
    shape = {"batchwise": (6,), "sessionwise": (2, 6), "eventwise": (events.slots, 6)}[style]
    in_batch = torch.randint(1, 31, (2, 3), generator=generator)
    negatives = Negatives(style, torch.randint(1, 31, shape, generator=generator), in_batch=in_batch, in_batch_valid=torch.ones(2, 3, dtype=torch.bool))
    batch = Assembly(scorer, torch.randn(events.slots, 4, generator=generator), events, negatives, sparse=False)
    counts = torch.arange(31, dtype=torch.float64) + 1
    log_freq = torch.log(counts / counts.sum()).float()
    distribution = ItemDistribution(30, counts if popularity else None, 0.75, torch.device("cpu"))
    every = torch.arange(9).expand(events.slots, -1)
    torch.testing.assert_close(batch.log_q(distribution, log_freq), batch.log_q(distribution, log_freq, every))


# ------------------------------------------------------------------------------------------------ row-sparse optimisers


@pytest.mark.parametrize("optimizer, expected", [("sparse-adam", ["SparseAdam", "Adam"]), ("sparse-adagrad", ["Adagrad", "Adagrad"]), ("adam", ["Adam"])])
def test_optimizer_choice_is_honoured(tiny_dataset, tmp_path, optimizer, expected):
    trainer = _trainer(tiny_dataset, tmp_path, optimizer=optimizer)
    assert [type(o).__name__ for o in trainer.optimizers] == expected
    assert trainer.sparse  # a sampled loss gives the item tables row-sparse gradients, whatever the optimiser


@pytest.mark.parametrize("optimizer, lazy", [("sparse-adam", True), ("adam", False)])
def test_sparse_adam_updates_only_the_rows_a_step_touched(tiny_dataset, tmp_path, optimizer, lazy):
    trainer = _trainer(tiny_dataset, tmp_path, optimizer=optimizer, dropout=0.0)
    inputs, targets, mask = _first_batch(trainer)
    events = EventSlots.select(mask, targets)
    trainer.update(trainer.loss(trainer.hidden(inputs, events), inputs, events))  # step 1 gives rows momentum
    before = trainer.model.item_embedding.detach().clone()
    second = trainer.store.tail_windows(trainer.order[16:32], trainer.config.max_length + 1)
    events = EventSlots.select(second[:, :-1] != 0, second[:, 1:])
    loss = trainer.loss(trainer.hidden(second[:, :-1], events), second[:, :-1], events)
    trainer.update(loss)
    grad = trainer.model.item_embedding.grad
    touched = grad.coalesce().indices()[0] if grad.is_sparse else grad.abs().sum(1).nonzero().squeeze(1)
    untouched = torch.ones(len(before), dtype=torch.bool)
    untouched[touched] = False
    moved = (trainer.model.item_embedding.detach() != before).any(1)
    assert bool(moved[touched].any())
    assert bool(moved[untouched].any()) != lazy  # dense Adam keeps moving rows from momentum; the sparse one does not


def test_sparse_optimizer_trains_checkpoints_and_resumes(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    args = [
        str(tiny_dataset),
        *tiny_train_args(batch_size=16, batch_negatives=15, topk=16, max_length=10, optimizer="sparse-adam", overfit_batches=5),
    ]
    assert invoke("train", *args, "--epochs", "1", "--out", str(out)).exit_code == 0
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert [o["type"] for o in state["optimizers"]] == ["SparseAdam", "Adam"]
    result = invoke("train", "--resume", str(out), "--epochs", "2")
    assert result.exit_code == 0, result.stderr
    assert len((out / "history.jsonl").read_text().splitlines()) == 2


# ------------------------------------------------------------------------------------------------ GRU4Rec+


def _naive_lanes(sessions: Sessions, order, b: int, max_events: int):
    """Reference session-parallel iteration in plain Python: (input, target, reset) per lane per step."""
    queue = list(order)
    lanes = [None] * b
    steps = []
    while True:
        resets = [False] * b
        for lane in range(b):
            if lanes[lane] is None or len(lanes[lane]) < 2:
                if queue:
                    s = queue.pop(0)
                    clicks = list(sessions.items[sessions.offsets[s] : sessions.offsets[s + 1]][-max_events:])
                    lanes[lane], resets[lane] = clicks, True
                else:
                    lanes[lane] = None
        if all(lane is None for lane in lanes):
            return steps
        step = []
        for lane in range(b):
            if lanes[lane] is None:
                step.append((0, 0, resets[lane]))
            else:
                step.append((int(lanes[lane][0]), int(lanes[lane][1]), resets[lane]))
                lanes[lane] = lanes[lane][1:]
        steps.append(step)


def test_lanes_walk_every_session_like_the_reference():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 9, 23)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    sessions = Sessions(np.arange(23), offsets, rng.integers(1, 50, offsets[-1]).astype(np.int32), np.arange(offsets[-1]))
    store = SessionStore(sessions, torch.device("cpu"))
    order = torch.from_numpy(rng.permutation(23))
    lanes = Lanes(store, order, 4, max_events=5)
    got = []
    while (safe := lanes.safe_steps()) > 0:
        for _ in range(safe):
            inputs, targets, active, reset = lanes.step()
            got.append([(int(i), int(t), bool(r)) if a else (0, 0, bool(r)) for i, t, a, r in zip(inputs, targets, active, reset)])
    expected = _naive_lanes(sessions, order.tolist(), 4, 5)
    assert [[(i, t) for i, t, _ in step] for step in got] == [[(i, t) for i, t, _ in step] for step in expected]
    assert [[r for i, t, r in step if i] for step in got] == [[r for i, t, r in step if i] for step in expected]


GRU4REC_YOOCHOOSE = {
    "model": "gru4rec",
    "dataset": "yoochoose",
    "hidden_size": 100,
    "num_layers": 1,
    "dropout": 0.0,
    "num_batch_negatives": None,
    "num_uniform_negatives": 2048,
    "reject_uniform_session_items": False,
    "reject_in_batch_items": True,
    "sampling_style": "batchwise",
    "loss": "bpr-max",
    "bpr_penalty": 0.5,
    "max_epochs": 3,
    "batch_size": 32,
    "max_session_length": 200,
    "lr": 0.2,
    "limit_val_batches": 1.0,
    "accelerator": "gpu",
    "overfit_batches": 0,
    "output_bias": True,
    "share_embeddings": True,
    "original_gru": False,
    "shuffling_style": "no_shuffling",
    "final_activation": True,
    "optimizer": "adagrad",
}


def test_gru4rec_reference_config_trains(tiny_dataset, tmp_path):
    path = tmp_path / "gru4rec_yoochoose.json"
    path.write_text(json.dumps(GRU4REC_YOOCHOOSE))
    out = tmp_path / "run"
    result = invoke(
        "train",
        str(tiny_dataset),
        "--config",
        str(path),
        "--device",
        "cpu",
        "--hidden-size",
        "32",
        "--uniform-negatives",
        "256",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["type"] == "gru4rec" and config["model"]["output_bias"] is True
    train = config["train"]
    assert train["batch_negatives"] is None and config["model"]["final_activation"] is True and train["optimizer"] == "adagrad" and train["lr"] == 0.2
    summary = json.loads(result.stdout)
    assert summary["valid"]["recall@20"] > 0.1
    evaluation = invoke("evaluate", str(out), "--json")
    assert evaluation.exit_code == 0 and json.loads(evaluation.stdout)["n_targets"] > 0


def test_gru4rec_defaults_are_the_reference_baseline(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    result = invoke("train", str(tiny_dataset), "--model", "gru4rec", "--epochs", "1", "--overfit-batches", "30", "--device", "cpu", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    document = json.loads((out / "config.json").read_text())
    train, model = document["train"], document["model"]
    assert (model["hidden_size"], train["batch_size"], train["loss"], train["optimizer"], train["uniform_negatives"]) == (100, 32, "bpr-max", "adagrad", 2048)
    assert (model["max_length"], model["output_bias"], model["final_activation"], train["lr"], train["bpr_penalty"]) == (200, True, True, 0.2, 0.5)


def test_original_gru_feeds_the_gates_directly(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "train",
        str(tiny_dataset),
        "--device",
        "cpu",
        "--hidden-size",
        "16",
        "--model",
        "gru4rec",
        "--original-gru",
        "--epochs",
        "1",
        "--overfit-batches",
        "10",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.stderr
    model = json.loads((out / "config.json").read_text())["model"]
    assert model["original_gru"] is True
    from tron_cli.modelio import load_model

    loaded, _, _ = load_model(out)
    assert loaded.item_embedding.shape[1] == 48 and loaded.output_embedding is not None
    assert torch.equal(loaded.gru.weight_ih_l0, torch.eye(48)) and not loaded.gru.weight_ih_l0.requires_grad


@pytest.mark.parametrize("loss", ["ce", "gbce"])
def test_new_losses_train_from_the_cli(tiny_dataset, tmp_path, loss):
    out = tmp_path / "run"
    result = invoke(
        "train",
        str(tiny_dataset),
        "--loss",
        loss,
        *tiny_train_args(batch_size=16, batch_negatives=15, topk=0, max_length=10, epochs=1, overfit_batches=10),
        "--out",
        str(out),
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["train"]["loss"] == loss


@pytest.mark.parametrize("n_rows", [10, 100])
def test_dense_table_gradients_leave_a_zero_buffer_behind(n_rows):
    """Inside the block a table's row-sparse gradient is dense (its repeated rows summed, the padding row still);
    after it the buffer is all zeros again, cleared whole (10 rows) or row by row (100 rows), and the sparse
    gradient is back."""
    from tron_cli.training.optim import dense_table_gradients

    table = torch.nn.Parameter(torch.zeros(n_rows, 3))
    rows = torch.tensor([[0, 2, 2]])
    values = torch.arange(9, dtype=torch.float32).view(3, 3)
    table.grad = torch.sparse_coo_tensor(rows, values, (n_rows, 3))
    buffers: dict = {}
    with dense_table_gradients([table], buffers):
        expected = torch.zeros(n_rows, 3)
        expected[2] = values[1] + values[2]
        torch.testing.assert_close(table.grad, expected)
    assert table.grad.is_sparse and not buffers[table].any()
