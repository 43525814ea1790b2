"""The extension guide, executed: docs/extending.md's model, loss, dataset and output format are written to their
packages as the one file each names, found by their registries without editing a list, and used through the real
CLI from download to recommend; a plugin's entry point registers what it brings; clashing option names are refused."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import invoke
from tron_cli import registry
from tron_cli.datasets import DATASETS
from tron_cli.losses import LOSSES, Loss
from tron_cli.models import MODELS
from tron_cli.options import Option
from tron_cli.outputs import OUTPUTS

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
REGISTRIES = {"tron_cli.losses": LOSSES, "tron_cli.models": MODELS, "tron_cli.datasets": DATASETS, "tron_cli.outputs": OUTPUTS}


def guide_files() -> dict[str, str]:
    """{path: text} of the guide's one-file examples: its Python blocks whose first line names their file."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    return {block.splitlines()[0][2:]: block for block in blocks if re.match(r"# tron_cli/\w+/\w+\.py\n", block)}


@pytest.fixture
def from_the_guide(tmp_path, monkeypatch):
    """The guide's files written into a directory that each package also reads, and the registries told to look again."""
    before = {package: set(REGISTRIES[package].names()) for package in REGISTRIES}  # the built-in ones
    written = []
    for relative, text in guide_files().items():
        package, module = relative.removesuffix(".py").replace("/", ".").rsplit(".", 1)
        folder = tmp_path / package
        folder.mkdir(exist_ok=True)
        (folder / f"{module}.py").write_text(text)
        monkeypatch.setattr(sys.modules[package], "__path__", [*sys.modules[package].__path__, str(folder)])
        written.append((package, module))
    for package in REGISTRIES:
        monkeypatch.setattr(REGISTRIES[package], "_loaded", False)
    yield written
    for package, module in written:
        for name in set(REGISTRIES[package].names()) - before[package]:
            REGISTRIES[package].unregister(name)
        sys.modules.pop(f"{package}.{module}", None)


def test_the_guide_adds_each_kind_in_one_file_found_without_a_list(from_the_guide):
    assert sorted(package for package, _ in from_the_guide) == sorted(REGISTRIES)  # one file for each kind, no other
    assert "hinge" in LOSSES.names() and "bag" in MODELS.names() and "rounds" in DATASETS.names() and "tsv" in OUTPUTS.names()


def test_the_guide_s_dataset_model_loss_and_output_format_work_through_the_cli(from_the_guide, home):
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
    assert document["train"]["lr"] == 0.05  # the model's training default
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


def test_an_option_of_another_model_or_loss_is_refused(from_the_guide, tiny_dataset, tmp_path):
    result = invoke("train", str(tiny_dataset), "--model", "bag", "--positions", "left", "--out", str(tmp_path / "a"))
    assert result.exit_code == 2 and "--positions is a setting of model sasrec, not of bag" in result.stderr
    result = invoke("train", str(tiny_dataset), "--loss", "ssm", "--margin", "0.5", "--out", str(tmp_path / "b"))
    assert result.exit_code == 2 and "--margin applies to --loss hinge, not ssm" in result.stderr


def test_a_name_registered_twice_is_refused(from_the_guide):
    with pytest.raises(ValueError, match="registered already"):
        LOSSES.register("hinge", LOSSES.get("hinge"))


@pytest.mark.parametrize(
    ("kind", "register", "needles"),
    [
        (
            "a loss option named like a training option",
            lambda: LOSSES.register("clash", Loss("clash", "x", None, (Option("alpha", 1.0, "x"),), sampled=False)),
            ("loss clash", "'alpha'", "the training options"),
        ),
        (
            "a loss option named like a model setting",
            lambda: LOSSES.register("clash", Loss("clash", "x", None, (Option("dropout", 0.1, "x"),), sampled=False)),
            ("loss clash", "'dropout'", "model sasrec"),
        ),
    ],
)
def test_an_option_name_another_kind_declares_is_refused_at_registration_naming_both(kind, register, needles):
    LOSSES.names()  # the built-in losses and models are registered first
    MODELS.names()
    with pytest.raises(ValueError) as refused:
        register()
    assert "clash" not in LOSSES.names()
    assert all(needle in str(refused.value) for needle in needles), str(refused.value)
    LOSSES.register("clash", Loss("clash", "x", None, (Option("clash_size", 1, "x"),), sampled=False))  # a name of its own is fine
    LOSSES.unregister("clash")
