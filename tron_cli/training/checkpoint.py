"""Resumable training state in safetensors + JSON: weights, optimiser state, random generators, position.

Optimiser state dicts mix tensors (moments, sums) with plain values (step counts, hyper-parameters); the
tensors go to safetensors under `<optimizer>.<param>.<name>`, everything else to JSON. The whole checkpoint
directory is written under a temporary name and renamed, so it is always the last complete one.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import torch

from tron_cli.artifacts.documents import read_json, write_json
from tron_cli.artifacts.files import atomic_directory
from tron_cli.artifacts.tensors import load_tensors, save_tensors
from tron_cli.errors import ArtifactError


def _optimizer_parts(optimizers: list[torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    tensors: dict[str, torch.Tensor] = {}
    documents = []
    for index, optimizer in enumerate(optimizers):
        state = optimizer.state_dict()
        plain_state: dict[str, dict[str, Any]] = {}
        for param, values in state["state"].items():
            plain_state[str(param)] = {}
            for name, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{index}.{param}.{name}"] = value
                else:
                    plain_state[str(param)][name] = value
        documents.append({"type": type(optimizer).__name__, "state": plain_state, "param_groups": state["param_groups"]})
    return tensors, documents


def _restore_optimizers(optimizers: list[torch.optim.Optimizer], tensors: dict[str, torch.Tensor], documents: list[dict[str, Any]], path: Path) -> None:
    if len(documents) != len(optimizers) or any(d["type"] != type(o).__name__ for d, o in zip(documents, optimizers)):
        found = ", ".join(d["type"] for d in documents)
        raise ArtifactError(f"{path} holds optimizer state for {found}, not for this run's optimizer", "Resume with the run's own settings")
    for index, (optimizer, document) in enumerate(zip(optimizers, documents)):
        state: dict[int, dict[str, Any]] = {int(p): dict(values) for p, values in document["state"].items()}
        prefix = f"{index}."
        for key, tensor in tensors.items():
            if key.startswith(prefix):
                _, param, name = key.split(".", 2)
                state.setdefault(int(param), {})[name] = tensor
        optimizer.load_state_dict({"state": state, "param_groups": document["param_groups"]})


def _generator_state(generator: torch.Generator) -> str:
    return base64.b64encode(generator.get_state().numpy().tobytes()).decode()


def _set_generator_state(generator: torch.Generator, encoded: str) -> None:
    generator.set_state(torch.frombuffer(bytearray(base64.b64decode(encoded)), dtype=torch.uint8))


def save(
    directory: Path,
    model: torch.nn.Module,
    optimizers: list[torch.optim.Optimizer],
    generator: torch.Generator,
    position: dict[str, Any],
    order: torch.Tensor | None,
    model_section: dict[str, Any],
    local_states: list[torch.Tensor],
    catalogue: str | None = None,
) -> None:
    """Write checkpoint/ atomically: weights (bound to `model_section` and the catalogue fingerprint `catalogue`),
    optimiser state, generator and RNG states (the shared generator, every rank's local one), the epoch order when
    mid-epoch, and `position`."""
    tensors, documents = _optimizer_parts(optimizers)
    rng: dict[str, Any] = {"cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(), "generator": _generator_state(generator)}
    if torch.cuda.is_available():
        rng["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    with atomic_directory(directory, force=True) as tmp:
        from tron_cli.modelio import save_weights

        save_weights(model, tmp / "weights.safetensors", section=model_section, catalogue=catalogue, epoch=position.get("epoch"))
        save_tensors(tmp / "optimizer.safetensors", tensors)
        generators = {f"local.{rank}": state for rank, state in enumerate(local_states)}
        if order is not None:
            generators["order"] = order.cpu()
        save_tensors(tmp / "generators.safetensors", generators)
        write_json(tmp / "state.json", {**position, "optimizers": documents, "rng": rng}, kind="checkpoint")


def load(
    directory: Path,
    model: torch.nn.Module,
    optimizers: list[torch.optim.Optimizer],
    generator: torch.Generator,
    model_section: dict[str, Any] | None = None,
    catalogue: str | None = None,
) -> tuple[dict[str, Any], torch.Tensor | None, list[torch.Tensor]]:
    """Restore everything `save` wrote into the given objects; returns (position, epoch order or None, local
    generator states). Weights recorded for another model section or catalogue are refused."""
    from tron_cli.modelio import load_weights

    state = read_json(directory / "state.json", "checkpoint")
    load_weights(model, directory / "weights.safetensors", kind="checkpoint", catalogue=catalogue, section=model_section)
    tensors = load_tensors(directory / "optimizer.safetensors", "checkpoint")
    _restore_optimizers(optimizers, tensors, state["optimizers"], directory)  # load_state_dict moves them to the params' device
    rng = state["rng"]
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(rng["cpu"])), dtype=torch.uint8))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in rng["cuda"]])
    _set_generator_state(generator, rng["generator"])
    generators = load_tensors(directory / "generators.safetensors", "checkpoint")
    local_states = [generators[f"local.{rank}"] for rank in range(sum(k.startswith("local.") for k in generators))]
    position = {k: v for k, v in state.items() if k not in ("optimizers", "rng", "schema", "tron_version")}
    return position, generators.get("order"), local_states
