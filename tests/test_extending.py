"""The extension points, proven from outside the package: a toy dataset, model, loss and output format are
declared in this file alone, registered with one line each, and used through the real CLI from download to
recommend; and a plugin's entry point registers what it brings."""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import invoke
from tron_cli import registry
from tron_cli.datasets import DATASETS, DatasetSpec, Parameter, Preset, read_otto_jsonl
from tron_cli.losses import LOSSES, Loss, Option
from tron_cli.models import MODELS, ModelSpec, setting
from tron_cli.models.base import SessionModel
from tron_cli.outputs import OUTPUTS, OutputFormat

# --------------------------------------------------------------------------------------------- a toy dataset

DAY_MS = 86_400_000


def write_rounds(out_dir: Path, report, sessions: int) -> list[Path]:
    """Sessions walk a ring of 30 items (each click's successor is the next item), a session an hour; the
    sessions of the last day are test."""
    lines: dict[str, list[str]] = {"train.jsonl": [], "test.jsonl": []}
    for session in range(sessions):
        start = (session * 7) % 30
        events = [{"aid": (start + k) % 30, "ts": session * DAY_MS // 24 + k * 1000, "type": "clicks"} for k in range(5)]
        lines["test.jsonl" if session >= sessions - 24 else "train.jsonl"].append(json.dumps({"session": session, "events": events}))
    for name, rows in lines.items():
        (out_dir / name).write_text("\n".join(rows) + "\n")
    return [out_dir / name for name in lines]


ROUNDS = DatasetSpec(
    name="rounds",
    summary="A ring of items walked in order (a test's toy).",
    preset=Preset(train_file="train.jsonl", test_file="test.jsonl", valid_days=1),
    format="otto-jsonl",
    read=read_otto_jsonl,
    generate=write_rounds,
    parameters=(Parameter("sessions", 240, "sessions to generate.", minimum=48),),
)


# --------------------------------------------------------------------------------------------- a toy model


@dataclass(frozen=True)
class BagConfig:
    hidden_size: int = setting(12, "Hidden size d.")
    max_length: int = setting(8, "Clicks the model reads.")
    decay: float = setting(0.5, "Weight of a click relative to the next one (toy only).")


class Bag(SessionModel):
    """The state after a click is a decayed sum of the embeddings of the clicks so far."""

    feeding = "windows"

    def __init__(self, config: BagConfig, *, n_items: int):
        super().__init__(n_items, config.hidden_size, share_embeddings=True, output_bias=False)
        self.config = config

    def forward(self, items: torch.Tensor, sparse: bool = False) -> torch.Tensor:
        x = self.embed(items, sparse)  # (B, T, d), padding rows are zero
        t = items.shape[1]
        weights = self.config.decay ** (torch.arange(t)[:, None] - torch.arange(t)[None, :]).clamp(min=0).float()
        return torch.tril(weights) @ x  # (B, T, d): position i sums clicks 0..i

    def last_hidden(self, windows: torch.Tensor) -> torch.Tensor:
        return self.forward(windows)[:, -1]


# --------------------------------------------------------------------------------------------- a toy loss


def hinge(pos, neg, valid, context):
    """Mean over valid negatives of max(0, margin - pos + neg)."""
    margins = F.relu(context.options["margin"] - pos[:, None] + neg) * valid
    return margins.sum(-1) / valid.sum(-1).clamp(min=1)


# --------------------------------------------------------------------------------------------- a toy output


class Tsv:
    def __init__(self, handle, id_type):
        self.handle = handle

    def write(self, batch):
        for session, ids in zip(batch.session_values(), batch.id_lists()):
            self.handle.write(f"{session}\t{' '.join(map(str, ids))}\n")

    def close(self):
        pass


@pytest.fixture
def registered():
    DATASETS.register("rounds", ROUNDS)
    MODELS.register("bag", ModelSpec("bag", Bag, BagConfig, "A decayed bag of items (a test's toy)."))
    LOSSES.register("hinge", Loss("hinge", "a margin between the positive and each negative", hinge, (Option("margin", 1.0, "The margin of hinge."),)))
    OUTPUTS.register("tsv", OutputFormat("tsv", "session, tab, ids", Tsv, (".tsv",)))
    yield
    DATASETS.unregister("rounds")
    MODELS.unregister("bag")
    LOSSES.unregister("hinge")
    OUTPUTS.unregister("tsv")


def test_a_toy_dataset_model_loss_and_output_format_work_through_the_cli(registered, home):
    help_text = invoke("train", "--help").stdout
    assert "bag" in help_text and "hinge" in help_text and "--decay" in help_text and "--margin" in help_text
    for command in (["download", "rounds", "--sessions", "240"], ["preprocess", "rounds"]):
        result = invoke(*command)
        assert result.exit_code == 0, result.stderr
    run = home / "runs" / "toy"
    args = [
        "train",
        "--model",
        "bag",
        "--decay",
        "0.7",
        "--loss",
        "hinge",
        "--margin",
        "0.5",
        "--uniform-negatives",
        "16",
        "--batch-negatives",
        "7",
        "--batch-size",
        "8",
        "--topk",
        "8",
        "--lr",
        "0.05",
        "--epochs",
        "3",
        "--device",
        "cpu",
        "--out",
        str(run),
        "--json",
    ]
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    document = json.loads((run / "config.json").read_text())
    assert document["dataset"]["name"] == "rounds"
    assert document["model"] == {"type": "bag", "n_items": 30, "hidden_size": 12, "max_length": 8, "decay": 0.7}
    assert document["train"]["loss"] == "hinge" and document["train"]["margin"] == 0.5
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[2]["loss"] < history[0]["loss"]  # the toy loss is minimised

    evaluation = invoke("evaluate", str(run), "--json")
    assert evaluation.exit_code == 0, evaluation.stderr
    assert json.loads(evaluation.stdout)["recall@20"] > 20 / 30  # the ring is learnable: better than chance

    bundle = home / "bundles" / "toy"
    assert invoke("export", str(run), "--out", str(bundle)).exit_code == 0
    out = home / "recs.tsv"
    recommended = invoke("recommend", str(bundle), "-k", "3", "-o", str(out), input='{"session": 7, "items": [1, 2]}\n')
    assert recommended.exit_code == 0, recommended.stderr
    session, ids = out.read_text().strip().split("\t")
    assert session == "7" and len(ids.split()) == 3


def _plugin_registers_a_loss() -> None:
    LOSSES.register("plugged", Loss("plugged", "a loss brought by a plugin", lambda pos, neg, valid, context: -pos))


def test_an_entry_point_plugin_is_loaded_when_a_registry_is_first_read(monkeypatch):
    entry = importlib.metadata.EntryPoint("plugged", f"{__name__}:_plugin_registers_a_loss", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [entry] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    try:
        assert "plugged" in LOSSES.names()
    finally:
        LOSSES.unregister("plugged")


def test_a_broken_plugin_is_named(monkeypatch):
    from tron_cli.errors import UsageError

    entry = importlib.metadata.EntryPoint("broken", "no_such_module_anywhere", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [entry])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with pytest.raises(UsageError, match="the tron plugin 'broken' \\(no_such_module_anywhere\\) failed to load"):
        registry.load_plugins()


def test_an_option_of_another_model_or_loss_is_refused(registered, tiny_dataset, tmp_path):
    result = invoke("train", str(tiny_dataset), "--model", "bag", "--positions", "left", "--out", str(tmp_path / "a"))
    assert result.exit_code == 2 and "--positions is a setting of model sasrec, not of bag" in result.stderr
    result = invoke("train", str(tiny_dataset), "--loss", "ssm", "--margin", "0.5", "--out", str(tmp_path / "b"))
    assert result.exit_code == 2 and "--margin applies to --loss hinge, not ssm" in result.stderr


def test_a_name_registered_twice_is_refused(registered):
    with pytest.raises(ValueError, match="registered already"):
        LOSSES.register("hinge", LOSSES.get("hinge"))
