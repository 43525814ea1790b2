"""The extension points, proven from outside the package: a toy model, a toy loss and a toy output format are
declared in this file alone, registered with one line each, and used through the real CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import invoke
from tron_cli.losses import LOSSES, Loss, Option
from tron_cli.models import MODELS, ModelSpec, setting
from tron_cli.models.base import SessionModel
from tron_cli.outputs import OUTPUTS, OutputFormat

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
    MODELS.register("bag", ModelSpec("bag", Bag, BagConfig, "A decayed bag of items (a test's toy)."))
    LOSSES.register("hinge", Loss("hinge", "a margin between the positive and each negative", hinge, (Option("margin", 1.0, "The margin of hinge."),)))
    OUTPUTS.register("tsv", OutputFormat("tsv", "session, tab, ids", Tsv, (".tsv",)))
    yield
    MODELS.unregister("bag")
    LOSSES.unregister("hinge")
    OUTPUTS.unregister("tsv")


def test_a_toy_model_loss_and_output_format_work_through_the_cli(registered, tiny_dataset, tmp_path):
    help_text = invoke("train", "--help").stdout
    assert "bag" in help_text and "hinge" in help_text and "--decay" in help_text and "--margin" in help_text
    run = tmp_path / "run"
    args = [
        "train",
        str(tiny_dataset),
        "--model",
        "bag",
        "--decay",
        "0.7",
        "--loss",
        "hinge",
        "--margin",
        "0.5",
        "--uniform-negatives",
        "64",
        "--batch-negatives",
        "15",
        "--batch-size",
        "16",
        "--topk",
        "16",
        "--lr",
        "0.01",
        "--epochs",
        "3",
        "--overfit-batches",
        "4",
        "--device",
        "cpu",
        "--out",
        str(run),
        "--json",
    ]
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    document = json.loads((run / "config.json").read_text())
    assert document["model"] == {"type": "bag", "n_items": document["dataset"]["n_items"], "hidden_size": 12, "max_length": 8, "decay": 0.7}
    assert document["train"]["loss"] == "hinge" and document["train"]["margin"] == 0.5
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[2]["loss"] < history[0]["loss"]  # the toy loss is minimised

    evaluation = invoke("evaluate", str(run), "--json")
    assert evaluation.exit_code == 0, evaluation.stderr
    assert 0.0 < json.loads(evaluation.stdout)["recall@20"] <= 1.0

    bundle = tmp_path / "bundle"
    assert invoke("export", str(run), "--out", str(bundle)).exit_code == 0
    out = tmp_path / "recs.tsv"
    recommended = invoke("recommend", str(bundle), "-k", "3", "-o", str(out), input='{"session": 7, "items": [1, 2]}\n')
    assert recommended.exit_code == 0, recommended.stderr
    session, ids = out.read_text().strip().split("\t")
    assert session == "7" and len(ids.split()) == 3


def test_an_option_of_another_model_or_loss_is_refused(registered, tiny_dataset, tmp_path):
    result = invoke("train", str(tiny_dataset), "--model", "bag", "--positions", "left", "--out", str(tmp_path / "a"))
    assert result.exit_code == 2 and "--positions is a setting of model sasrec, not of bag" in result.stderr
    result = invoke("train", str(tiny_dataset), "--loss", "ssm", "--margin", "0.5", "--out", str(tmp_path / "b"))
    assert result.exit_code == 2 and "--margin applies to --loss hinge, not ssm" in result.stderr


def test_a_name_registered_twice_is_refused(registered):
    with pytest.raises(ValueError, match="registered already"):
        LOSSES.register("hinge", LOSSES.get("hinge"))
