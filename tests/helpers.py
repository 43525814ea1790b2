"""One home for what the tests share: the CLI runner, the tiny training options, and the reference material.

    from tests.helpers import invoke, tiny_train_args
    invoke("train", str(data), *tiny_train_args(epochs=1, batch_size=16), "--out", str(run))

Fixtures (tiny datasets and runs built through the real CLI) are in conftest.py, which uses these.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"  # small golden values and raw samples, kept in the repo (see its README)

# the training options that make a run of a few seconds on the `tiny_dataset` fixture
TINY = {"device": "cpu", "hidden_size": 16, "uniform_negatives": 64, "batch_size": 32, "batch_negatives": 31, "topk": 32, "max_length": 20}


def tiny_train_args(**overrides: Any) -> list[str]:
    """`tron train` flags of the tiny options, with `overrides` by option name (True: a bare flag; None: left out)."""
    args: list[str] = []
    for name, value in {**TINY, **overrides}.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


# GRU4Rec+ at a size that trains in a few seconds (its own defaults, but smaller)
TINY_GRU = {"model": "gru4rec", "hidden_size": 32, "batch_size": None, "batch_negatives": None, "topk": None, "epochs": 1, "overfit_batches": 20}


def invoke(*args: str, input: str | None = None) -> Result:
    """Run `tron ARGS` in-process; stdout and stderr stay separate."""
    from tron_cli.cli import cli

    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def shared(relative: str) -> Path:
    """A large file of ../shared (Yoochoose 1/64), or skip the test saying so when it is absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{path} is not present: the large datasets live in ../shared beside the checkout, not in the repository")
    return path


def fixture(relative: str) -> Path:
    """A small sample of tests/fixtures (copied from ../shared/data, source and licence in its README)."""
    return FIXTURES / relative


def golden(name: str) -> dict:
    """Values computed with the reference code: tests/fixtures/golden/NAME, else ../shared/golden/NAME."""
    path = FIXTURES / "golden" / name
    return json.loads((path if path.is_file() else shared(f"golden/{name}")).read_text())
