"""Semantic versioning of the Python API: `tron_cli.__all__` and the signatures of its functions and classes are
recorded in tests/public_api.json, and any change to them fails here until the record is updated on purpose:

    python -m tests.test_public_api --write

A name that disappears, a parameter that goes or changes kind, or an argument that becomes required breaks its
callers: that needs a major version and a CHANGELOG entry. A new name or a new optional keyword is a minor one.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import tron_cli

RECORD = Path(__file__).resolve().parent / "public_api.json"
UNRECORDED = {"__version__", "errors"}  # a value, and a module whose exceptions are recorded by name below


def _parameters(function: Any) -> list[dict[str, Any]]:
    """Each parameter's name, kind and whether a caller must give it."""
    return [
        {
            "name": name,
            "kind": parameter.kind.name,
            "required": parameter.default is inspect.Parameter.empty and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD),
        }
        for name, parameter in inspect.signature(function).parameters.items()
        if name != "self"
    ]


def _members(cls: type) -> dict[str, Any]:
    """The public methods (with their parameters) and attributes of a class, its own and inherited from tron_cli."""
    out: dict[str, Any] = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name != "__init__":
            continue
        if name == "__init__" and member is object.__init__:
            continue
        defined = next((base for base in cls.__mro__ if name in vars(base)), None)
        if defined is None or not defined.__module__.startswith("tron_cli"):
            continue
        out[name] = _parameters(member) if inspect.isfunction(member) else type(member).__name__
    for base in cls.__mro__:
        if base.__module__.startswith("tron_cli"):
            out.update({name: "attribute" for name in vars(base).get("__annotations__", {}) if not name.startswith("_") and name not in out})
    return dict(sorted(out.items()))


def current() -> dict[str, Any]:
    """The public API as it is now."""
    api: dict[str, Any] = {}
    for name in sorted(tron_cli.__all__):
        if name in UNRECORDED:
            continue
        value = getattr(tron_cli, name)
        if inspect.isclass(value) and hasattr(value, "__annotations__") and getattr(value, "__total__", None) is not None:  # a TypedDict
            api[name] = {"kind": "keywords", "keys": sorted(value.__annotations__)}
        elif inspect.isclass(value):
            api[name] = {"kind": "class", "members": _members(value)}
        else:
            api[name] = {"kind": "function", "parameters": _parameters(value), "signature": str(inspect.signature(value))}
    api["errors"] = {
        "kind": "exceptions",
        "names": sorted(name for name, value in vars(tron_cli.errors).items() if inspect.isclass(value) and issubclass(value, Warning | Exception)),
    }
    return api


def breaking(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What changed in a way that breaks a caller of the recorded API."""
    problems = []
    for name, entry in recorded.items():
        if name not in now:
            problems.append(f"{name} disappeared")
            continue
        if entry["kind"] == "function":
            problems += [f"{name}: {problem}" for problem in _broken_parameters(entry["parameters"], now[name]["parameters"])]
        elif entry["kind"] == "class":
            for member, shape in entry["members"].items():
                found = now[name]["members"].get(member)
                if found is None:
                    problems.append(f"{name}.{member} disappeared")
                elif isinstance(shape, list) and isinstance(found, list):
                    problems += [f"{name}.{member}: {problem}" for problem in _broken_parameters(shape, found)]
        else:
            key = "keys" if entry["kind"] == "keywords" else "names"
            problems += [f"{name}: {gone} disappeared" for gone in sorted(set(entry[key]) - set(now[name][key]))]
    return problems


def _broken_parameters(recorded: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[str]:
    by_name = {parameter["name"]: parameter for parameter in now}
    problems = []
    for parameter in recorded:
        found = by_name.get(parameter["name"])
        if found is None:
            problems.append(f"parameter {parameter['name']} disappeared")
        elif found["kind"] != parameter["kind"]:
            problems.append(f"parameter {parameter['name']} is {found['kind']}, was {parameter['kind']}")
        elif found["required"] and not parameter["required"]:
            problems.append(f"parameter {parameter['name']} became required")
    known = {parameter["name"] for parameter in recorded}
    problems += [f"new required parameter {parameter['name']}" for parameter in now if parameter["required"] and parameter["name"] not in known]
    positional = [p["name"] for p in recorded if p["kind"] in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")]
    if positional != [p["name"] for p in now if p["kind"] in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")][: len(positional)]:
        problems.append("the positional parameters moved")
    return problems


def test_the_public_api_is_the_recorded_one():
    recorded = json.loads(RECORD.read_text())
    now = current()
    problems = breaking(recorded, now)
    assert problems == [], f"breaking changes to the public API (a major version, named in CHANGELOG.md): {problems}"
    assert now == recorded, "the public API grew or changed compatibly: record it on purpose with python -m tests.test_public_api --write"


def test_a_removed_name_or_a_new_required_argument_is_breaking():
    recorded = current()
    shrunk = {name: entry for name, entry in recorded.items() if name != "load"}
    assert breaking(recorded, shrunk) == ["load disappeared"]
    changed = json.loads(json.dumps(recorded))
    changed["evaluate"]["parameters"][1]["required"] = True
    changed["train"]["parameters"].append({"name": "seed_everything", "kind": "KEYWORD_ONLY", "required": True})
    assert breaking(recorded, changed) == ["evaluate: parameter split became required", "train: new required parameter seed_everything"]
    assert breaking(recorded, {**recorded, "new_function": {"kind": "function", "parameters": [], "signature": "()"}}) == []


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.test_public_api", description="Record the public API in tests/public_api.json.")
    parser.add_argument("--write", action="store_true", help="write the record (after a change made on purpose)")
    if parser.parse_args().write:
        RECORD.write_text(json.dumps(current(), indent=1) + "\n")
        print(f"wrote {RECORD}", file=sys.stderr)
