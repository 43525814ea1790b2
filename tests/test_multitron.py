"""MultiTRON (`tron train --objective multitron`): SASRec reading a preference vector, one Dirichlet draw per
step keyed by (seed, step), the two-objective losses in the registry, the checkpoint picked by the
hypervolume of the validation front, and the reference's MultiTRON configs accepted unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.helpers import invoke, tiny_train_args
from tests.test_device import HostReads, _batch, _trainer
from tests.test_orders import _as_version_1
from tron_cli.artifacts.sessions import read_dataset
from tron_cli.evaluation.metrics import hypervolume
from tron_cli.models import MODELS
from tron_cli.training.config import TrainConfig, load_config_file
from tron_cli.training.feeds import window_step
from tron_cli.training.loop import Trainer

FAST = tiny_train_args()
MULTI = dict(objective="multitron", hidden_size=16, uniform_negatives=64, batch_size=32, topk=32, max_length=20, device="cpu")

# otto-de/MultiTRON configs/otto/..._beta05_reg1.json, as shipped
REFERENCE = {
    "dataset": "otto",
    "beta": [0.5, 0.5],
    "regularization_penalty": 1.0,
    "hidden_size": 200,
    "num_layers": 3,
    "dropout": 0.05,
    "num_batch_negatives": 32,
    "num_uniform_negatives": 16384,
    "reject_uniform_session_items": False,
    "reject_in_batch_items": True,
    "sampling_style": "batchwise",
    "topk_sampling": True,
    "topk_sampling_k": 100,
    "loss": "ssm_and_be",
    "max_epochs": 10,
    "batch_size": 256,
    "max_session_length": 50,
    "lr": 0.0001,
    "limit_val_batches": 1.0,
    "accelerator": "gpu",
    "overfit_batches": 0,
    "share_embeddings": True,
    "output_bias": False,
    "shuffling_style": "no_shuffling",
    "optimizer": "adam",
}


def test_the_reference_multitron_config_reads_unchanged(tmp_path):
    path = tmp_path / "otto_beta05_reg1.json"
    path.write_text(json.dumps(REFERENCE))
    options, extras = load_config_file(path)
    config = TrainConfig.create(**options)
    assert extras == {"dataset": "otto"}
    assert config.objective == "multitron" and config.loss == "ssm_and_be" and config.beta == (0.5, 0.5)
    assert config.loss_options == {"regularization": 1.0} and config.network.preference and config.network.num_layers == 3
    assert config.topk == 100 and config.epochs == 10 and config.lr == 0.0001


def test_a_click_model_has_no_preference_parameters_and_the_same_initial_weights():
    spec = MODELS.get("sasrec")
    torch.manual_seed(0)
    click = spec.build(spec.config_class(hidden_size=8, max_length=5), 20)
    torch.manual_seed(0)
    multi = spec.build(spec.config_class(hidden_size=8, max_length=5, preference=True), 20)
    assert not any("preference" in name for name in click.state_dict())
    shared = click.state_dict()
    assert set(multi.state_dict()) - set(shared) == {"preference_projection.weight", "preference_projection.bias"}
    for name, value in shared.items():  # the projection is drawn last: every other weight is the same
        torch.testing.assert_close(multi.state_dict()[name], value)


def test_the_model_reads_the_preference_and_the_event_path_equals_the_window_path():
    spec = MODELS.get("sasrec")
    model = spec.build(spec.config_class(hidden_size=8, max_length=6, preference=True, dropout=0.0), 30).eval()
    items = torch.tensor([[0, 0, 3, 4, 5, 6], [0, 7, 8, 9, 10, 11]])
    preference = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    full = model(items, preference=preference)
    assert not torch.allclose(full, model(items, preference=preference.flip(0)))
    events = (items != 0).reshape(-1).nonzero().squeeze(1)
    torch.testing.assert_close(model(items, events=events, preference=preference), full.reshape(12, -1)[events])
    model.use_order_weight(0.8)
    torch.testing.assert_close(model.last_hidden(items[1:]), model.last_hidden(items[1:], torch.tensor([0.2, 0.8])))


def test_preference_draws_are_keyed_by_seed_and_step(tiny_dataset, tmp_path):
    trainer = _trainer(tiny_dataset, tmp_path, **MULTI, beta=(0.5,))
    first = trainer.preference()
    trainer.state.global_step = 7
    seventh = trainer.preference()
    trainer.state.global_step = 0
    assert torch.equal(trainer.preference(), first) and not torch.equal(first, seventh)
    assert float(first.sum()) == pytest.approx(1.0) and (first >= 0).all()
    assert _trainer(tiny_dataset, tmp_path, **MULTI).preference() is not None
    assert _trainer(tiny_dataset, tmp_path).preference() is None


def test_a_multitron_step_never_reads_from_the_device(tiny_dataset, tmp_path, as_on_a_gpu):
    trainer = _trainer(tiny_dataset, tmp_path, **MULTI)
    for step in range(2):
        inputs, targets, mask, slots = _batch(trainer, step)
        order = torch.arange(len(trainer.store))[step * trainer.local_batch : (step + 1) * trainer.local_batch]
        ordered = trainer.store.tail_labels(order, inputs.shape[1] + 1)[:, 1:]
        with HostReads() as reads:
            loss = window_step(trainer, inputs, targets, mask, slots, mask.sum(), ordered)
        assert reads.calls == [], reads.calls
        trainer.state.global_step += 1
    assert torch.isfinite(loss)


def test_the_order_labels_reach_the_loss(tiny_dataset, tmp_path):
    trainer = _trainer(tiny_dataset, tmp_path, **MULTI)
    inputs, targets, mask, slots = _batch(trainer)
    ordered = trainer.store.tail_labels(torch.arange(trainer.local_batch), inputs.shape[1] + 1)[:, 1:]
    assert ordered[mask].any()  # the synthetic orders make some targets ordered
    losses = [
        float(window_step(_trainer(tiny_dataset, tmp_path, **MULTI), inputs, targets, mask, slots, mask.sum(), labels)) for labels in (ordered, ~ordered & mask)
    ]
    assert losses[0] != losses[1]


def test_hypervolume_of_a_front():
    assert hypervolume([(0.5, 0.1), (0.3, 0.3), (0.1, 0.4)]) == pytest.approx(0.5 * 0.1 + 0.3 * 0.2 + 0.1 * 0.1)
    assert hypervolume([(0.5, 0.1), (0.4, 0.05)]) == pytest.approx(0.05)  # a dominated point adds nothing
    assert hypervolume([(0.0, 0.5), (-1.0, 1.0)]) == 0.0 and hypervolume([]) == 0.0


def test_train_multitron_end_to_end_picks_the_epoch_by_the_validation_front(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    result = invoke(
        "train",
        str(tiny_dataset),
        *FAST,
        "--objective",
        "multitron",
        "--beta",
        "0.5",
        "--regularization",
        "0.2",
        "--epochs",
        "2",
        "--overfit-batches",
        "2",
        "--out",
        str(run),
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["selected_by"] == "valid hypervolume"
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    best = max(history, key=lambda record: record["valid"]["hypervolume"])
    assert summary["best_epoch"] == best["epoch"]
    valid = history[0]["valid"]
    points = [(valid[f"order_weight_{w}/recall@20"], valid[f"order_weight_{w}/order_recall@20"]) for w in ("0", "0.5", "1")]
    assert valid["hypervolume"] == pytest.approx(hypervolume(points))
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["objective"] == "multitron" and config["train"]["beta"] == [0.5, 0.5] and config["train"]["regularization"] == 0.2
    assert config["model"]["preference"] is True


def test_multitron_resumes_exactly(tiny_dataset, tmp_path):
    args = [str(tiny_dataset), *FAST, "--objective", "multitron", "--overfit-batches", "2"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert invoke("train", *args, "--epochs", "2", "--out", str(whole)).exit_code == 0
    assert invoke("train", *args, "--epochs", "1", "--out", str(part)).exit_code == 0
    assert invoke("train", "--resume", str(part), "--epochs", "2").exit_code == 0
    # tensors and metadata, not bytes: safetensors writes its metadata map in no fixed order
    with safe_open(whole / "model.safetensors", "pt") as a, safe_open(part / "model.safetensors", "pt") as b:
        names = sorted(a.keys())
        assert a.metadata() == b.metadata() and names == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(name), b.get_tensor(name)) for name in names)


def test_multitron_needs_orders_and_a_model_with_a_preference_input(tiny_dataset, tmp_path):
    result = invoke("train", str(tiny_dataset), "--objective", "multitron", "--model", "gru4rec", "--out", str(tmp_path / "g"))
    assert result.exit_code == 2 and "model gru4rec has no preference input" in result.stderr
    old = tmp_path / "old"
    shutil.copytree(tiny_dataset, old)
    _as_version_1(old)
    result = invoke("train", str(old), *FAST, "--objective", "multitron", "--out", str(tmp_path / "o"))
    assert result.exit_code != 0 and "--objective multitron learns from orders" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = invoke("train", str(tiny_dataset), *FAST, "--loss", "ssm", "--regularization", "1", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "--regularization applies to --loss ssm_and_be, ssm_and_distortion" in result.stderr


def test_a_click_trainer_has_no_preference_and_selects_on_its_metric(tiny_dataset, tmp_path):
    config = TrainConfig.create(hidden_size=16, uniform_negatives=64, batch_size=32, topk=32, max_length=20, device="cpu")
    trainer = Trainer(config, read_dataset(tiny_dataset), tmp_path)
    assert not trainer.multi and trainer.model.preference_projection is None and trainer.preference() is None
    assert trainer.select_on == "recall@20" and not config.network.preference


@pytest.fixture(scope="session")
def multitron_run(tiny_dataset, tmp_path_factory) -> Path:
    """A MultiTRON run trained for two steps on `tiny_dataset`. Treat as read-only (pareto.json aside)."""
    run = tmp_path_factory.mktemp("multitron") / "run"
    result = invoke("train", str(tiny_dataset), *FAST, "--objective", "multitron", "--epochs", "1", "--overfit-batches", "2", "--out", str(run))
    assert result.exit_code == 0, result.stderr
    return run


def test_pareto_sweeps_evenly_spaced_weights_deterministically(multitron_run):
    result = invoke("pareto", str(multitron_run), "--points", "4", "--split", "valid", "--limit", "200", "--json")
    assert result.exit_code == 0, result.stderr
    front = json.loads(result.stdout)
    assert front["schema"] == "pareto/1" and front["reference_point"] == [0.0, 0.0] and front["split"] == "valid"
    assert [point["order_weight"] for point in front["points"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert front["hypervolume"] == pytest.approx(hypervolume([(p["recall@20"], p["order_recall@20"]) for p in front["points"]]))
    assert len({p["recall@20"] for p in front["points"]}) > 1  # the preference changes the rankings
    assert json.loads((multitron_run / "pareto.json").read_text())["points"] == front["points"]
    again = json.loads(invoke("pareto", str(multitron_run), "--points", "4", "--split", "valid", "--limit", "200", "--json").stdout)
    assert again["points"] == front["points"]
    assert "order weight" in result.stderr and "hypervolume" in result.stderr


def test_plot_draws_the_front_of_a_run_with_pareto_json(multitron_run, tmp_path):
    if not (multitron_run / "pareto.json").is_file():
        assert invoke("pareto", str(multitron_run), "--points", "2", "--limit", "100").exit_code == 0
    result = invoke("plot", str(multitron_run), "--pareto", "-o", str(tmp_path / "front.png"), "--json")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from tron_cli.charts import build_front_figure

    recall, density = build_front_figure(multitron_run).axes[:2]
    assert recall.get_xlabel() == "click Recall@20" and recall.get_ylabel() == "order_recall@20"
    assert density.get_xlabel() == "click Recall@20" and density.get_ylabel() == "order_density@20"
    assert len(density.collections[0].get_offsets()) == len(json.loads((multitron_run / "pareto.json").read_text())["points"])


def test_pareto_refuses_a_click_run(tiny_model):
    run, _ = tiny_model
    result = invoke("pareto", str(run), "--points", "2")
    assert result.exit_code != 0 and "reads no preference vector" in result.stderr


def test_evaluate_at_an_order_weight_is_that_point_of_the_front(multitron_run):
    result = invoke("evaluate", str(multitron_run), "--order-weight", "1", "--split", "valid", "-k", "20", "--json")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    front = json.loads(invoke("pareto", str(multitron_run), "--points", "1", "--split", "valid", "--json").stdout)
    assert metrics["order_weight"] == 1.0
    assert metrics["recall@20"] == pytest.approx(front["points"][1]["recall@20"])
    assert metrics["order_recall@20"] == pytest.approx(front["points"][1]["order_recall@20"])


def test_evaluate_and_recommend_refuse_an_order_weight_for_a_click_model(tiny_model):
    run, bundle = tiny_model
    result = invoke("evaluate", str(run), "--order-weight", "0.5")
    assert result.exit_code != 0 and "reads no preference vector" in result.stderr
    result = invoke("recommend", str(bundle), input='{"session": 1, "items": [1, 2], "order_weight": 0.3}\n')
    assert result.exit_code != 0 and "reads no preference vector" in result.stderr


def _catalogue_ids(run: Path, n: int) -> list[int]:
    import pyarrow.parquet as pq

    config = json.loads((run / "config.json").read_text())
    return pq.read_table(Path(config["dataset"]["path"]) / "items.parquet").column("item").to_pylist()[:n]


def test_recommend_reads_the_order_weight_of_each_line_and_writes_a_list_per_event_type(multitron_run, tmp_path):
    items = _catalogue_ids(multitron_run, 4)
    lines = "".join(
        json.dumps({"session": s, "items": items, **({"order_weight": w} if w is not None else {})}) + "\n" for s, w in ((1, 0.0), (2, 1.0), (3, None))
    )
    result = invoke("recommend", str(multitron_run), "-k", "10", input=lines)
    assert result.exit_code == 0, result.stderr
    answers = [json.loads(line)["items"] for line in result.stdout.splitlines()]
    assert answers[0] != answers[1]
    at_one = json.loads(invoke("recommend", str(multitron_run), "-k", "10", "--order-weight", "1", input=lines.splitlines()[2] + "\n").stdout)["items"]
    assert at_one == answers[1]  # a line without its own weight takes --order-weight
    out = tmp_path / "submission.csv"
    assert invoke("recommend", str(multitron_run), "-k", "10", "-o", str(out), input=lines).exit_code == 0
    rows = dict(line.split(",") for line in out.read_text().splitlines()[1:])
    # clicks at order weight 0 and orders at 1: the answers of lines 1 and 2
    assert rows["1_clicks"] == " ".join(map(str, answers[0])) and rows["1_orders"] == " ".join(map(str, answers[1]))
    assert rows["2_clicks"] == rows["1_clicks"] and rows["2_orders"] == rows["1_orders"]  # each type at its own weight, whatever the line's


def test_onnx_export_keeps_the_preference_input(multitron_run, tmp_path):
    import numpy as np
    import onnxruntime

    from tron_cli.inference.scorer import Scorer
    from tron_cli.inference.scoring import score_sessions
    from tron_cli.modelio import load_model

    out = tmp_path / "bundle"
    result = invoke("export", str(multitron_run), "--out", str(out), "--format", "onnx")
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["onnx"]["exporter"] == "dynamo"
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("items", "tensor(int64)"), ("k", "tensor(int64)"), ("preference", "tensor(float)")]
    model, _, _ = load_model(multitron_run)
    items = torch.tensor([[0, 0, 3, 4, 5], [6, 7, 8, 9, 10], [0, 0, 0, 0, 11]])
    preference = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]])
    ids, scores = session.run(None, {"items": items.numpy(), "preference": preference.numpy(), "k": np.array(10, dtype=np.int64)})
    expected_scores, expected_ids = score_sessions(Scorer(model), items, 10, preference=preference)
    np.testing.assert_allclose(scores, expected_scores.numpy(), atol=1e-4, rtol=1e-5)
    assert (ids == expected_ids.numpy()).mean() > 0.9  # near-ties may swap
    other, _ = session.run(None, {"items": items.numpy(), "preference": preference.flip(1).numpy(), "k": np.array(10, dtype=np.int64)})
    assert not np.array_equal(other, ids)


def test_multitron_on_two_processes_equals_one(tiny_dataset, tmp_path):
    from tests.test_distributed import COMMON

    records = []
    for devices, batch in (("2", "8"), ("1", "16")):
        out = tmp_path / f"run{devices}"
        result = invoke(
            "train",
            str(tiny_dataset),
            *COMMON,
            "--objective",
            "multitron",
            "--valid-limit",
            "200",
            "--batch-size",
            batch,
            "--devices",
            devices,
            "--out",
            str(out),
        )
        assert result.exit_code == 0, result.stderr
        records.append(json.loads((out / "history.jsonl").read_text().splitlines()[0]))
    assert records[0]["loss"] == pytest.approx(records[1]["loss"], abs=1e-5)  # every rank drew the same preference per step
    assert records[0]["valid"]["hypervolume"] == pytest.approx(records[1]["valid"]["hypervolume"], abs=1e-4)


def test_serve_answers_each_session_at_its_order_weight(multitron_run, tiny_model):
    from fastapi.testclient import TestClient

    from tron_cli.inference.predictor import load_predictor
    from tron_cli.stages.serve import ServeOptions, create_app

    items = _catalogue_ids(multitron_run, 4)
    expected = {}
    for weight in (0.0, 0.5, 1.0):
        line = json.dumps({"session": 1, "items": items, "order_weight": weight}) + "\n"
        expected[weight] = json.loads(invoke("recommend", str(multitron_run), "-k", "10", input=line).stdout)["items"]
    assert expected[0.0] != expected[1.0]
    predictor = load_predictor(multitron_run, torch.device("cpu"))
    with TestClient(create_app(predictor, ServeOptions(order_weight=1.0))) as client:
        about = client.get("/metadata").json()
        assert about["preference_input"] is True and about["order_weight"] == 1.0

        def ask(body):
            response = client.post("/recommend", json={"k": 10, **body})
            assert response.status_code == 200, response.text
            return response.json()

        assert ask({"items": items})["items"] == expected[1.0]  # the server's --order-weight
        assert ask({"items": items, "order_weight": 0})["items"] == expected[0.0]
        results = ask({"sessions": [{"items": items}, {"items": items, "order_weight": 0.5}], "order_weight": 0.0})["results"]
        assert [r["items"] for r in results] == [expected[0.0], expected[0.5]]  # a session's own weight wins
        for body, said in (
            ({"items": items, "order_weight": 1.5}, "order_weight is 1.5, not between 0 and 1"),
            ({"sessions": [{"items": items, "order_weight": -0.1}]}, "sessions[0].order_weight is -0.1"),
            ({"items": items, "order_weight": "high"}, "order_weight"),
        ):
            response = client.post("/recommend", json=body)
            assert response.status_code == 422 and said in response.json()["error"], response.text
    with TestClient(create_app(load_predictor(tiny_model[1], torch.device("cpu")))) as client:
        response = client.post("/recommend", json={"items": [1, 2], "order_weight": 0.5})
        assert response.status_code == 422 and "reads no preference vector" in response.json()["error"]
        assert client.get("/metadata").json()["order_weight"] is None
    result = invoke("serve", str(tiny_model[1]), "--order-weight", "0.5", "--port", "0")
    assert result.exit_code == 2 and "reads no preference vector" in result.stderr
