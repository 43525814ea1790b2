"""The artifact contract's tags: each kind's schema version, which versions a reader accepts, which command makes
it (named when a file is missing or outdated), and what may name a dataset, run, bundle or study directory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SCHEMA_VERSION = 1
# kinds whose current version is not 1, and the earlier versions their readers still accept
VERSIONS = {"sessions": 2, "dataset": 2}
READABLE = {"sessions": (1, 2), "dataset": (1, 2)}
SCHEMA_KEY = b"tron.schema"

# Which command makes each kind of artifact: readers name it when a file is missing or outdated.
MADE_BY = {
    "manifest": "tron download NAME",
    "dataset": "tron preprocess",
    "sessions": "tron preprocess",
    "items": "tron preprocess",
    "run": "tron train",
    "summary": "tron train",
    "checkpoint": "tron train",
    "bundle": "tron export",
    "metrics": "tron evaluate",
    "tracking": "tron train --track",
    "study": "tron tune",
    "pareto": "tron pareto",
}

SPLITS = ("train", "valid", "test")

# The document whose schema makes a directory an artifact of each kind (a run is one from its start).
MARKERS = {"download": "manifest.json", "dataset": "dataset.json", "run": "config.json", "bundle": "config.json", "study": "study.json"}
SCHEMAS = {"download": "manifest", "dataset": "dataset", "run": "run", "bundle": "bundle", "study": "study"}


def schema_tag(kind: str) -> str:
    """The tag written into a new artifact of `kind`: its current version."""
    return f"{kind}/{VERSIONS.get(kind, SCHEMA_VERSION)}"


def readable(kind: str, found: object) -> bool:
    """Whether a file tagged `found` is of a version of `kind` that this tron reads."""
    return found in {f"{kind}/{version}" for version in READABLE.get(kind, (VERSIONS.get(kind, SCHEMA_VERSION),))}


# the kinds whose command has --force (tune resumes its study, pareto and evaluate rewrite their file)
FORCE = {"manifest", "dataset", "sessions", "items", "run", "summary", "checkpoint", "tracking", "bundle"}


def redo_hint(kind: str) -> str:
    """What to run to make a file of `kind` again (naming --force only where that command has it)."""
    return f"Re-run: {MADE_BY.get(kind, 'the command that made it')}" + (" (add --force to replace it)" if kind in FORCE else "")


def is_safe_name(name: str) -> bool:
    """Whether `name` can name a dataset, run, bundle or study directory: one plain path component, not hidden
    (stages skip names starting with a dot), without a path separator or a NUL byte."""
    return bool(name) and name not in (".", "..") and not name.startswith(".") and not any(c in name for c in "/\\\0")


def whole_number(low: int, high: int | None = None) -> Callable[[Any], bool]:
    """A test that a JSON value is an integer (not a bool) within [low, high]."""
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
