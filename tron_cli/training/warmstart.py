"""Warm start (`tron train DATA --init-from RUN|BUNDLE`): a new run begins with its parent's weights.

Every network weight and the item rows of the parent's catalogue come from the parent; the dataset's catalogue
must begin with the parent's (`tron preprocess --catalogue-from`, checked by `lineage.check_descends`), so the
item tables grow in place: rows 1..M are the parent's, rows M+1..N are the new items'. A new row starts as the
mean of the parent's item rows plus the row a cold start would draw (xavier noise; zero for a bias): the mean
puts a new item where the known items are, at their scale, so that the sampled loss meets it among the hard
negatives and its first gradients move it as much as a known item's; the noise keeps new items apart, so that
items clicked in different contexts do not share one vector. A new item never seen in training keeps a
middling score (the average item's) rather than an arbitrary one. With no new item the child starts as exactly
the parent: with learning rate 0 it scores as the parent does (tested).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tron_cli.artifacts.files import sha256_file
from tron_cli.artifacts.lineage import check_descends
from tron_cli.artifacts.sessions import Dataset
from tron_cli.artifacts.tensors import load_tensors
from tron_cli.errors import ArtifactError, UsageError
from tron_cli.modelio import catalogue_of, check_weights, expected_tensors, model_of, read_model_dir
from tron_cli.models import MODELS
from tron_cli.models.base import SessionModel

NEW_ROWS = "mean of the parent's item rows + a cold start's initial row"  # recorded in config.json's init_from


@dataclass(frozen=True)
class Origin:
    """The run or bundle a warm start begins from: its model section, catalogue and selected weights."""

    path: Path
    kind: str  # "run" or "bundle"
    document: dict[str, Any]  # its config.json
    section: dict[str, Any]  # its model section
    fingerprint: str

    @property
    def n_items(self) -> int:
        return int(self.section["n_items"])

    @property
    def weights(self) -> Path:
        return self.path / "model.safetensors"

    def record(self, new_items: int) -> dict[str, Any]:
        """config.json's `init_from`: where the weights came from, and how the new items' rows began."""
        return {
            "path": str(self.path.resolve()),
            "kind": self.kind,
            "name": self.document.get("name", self.path.name),
            "catalogue_sha256": self.fingerprint,
            "n_items": self.n_items,
            "new_items": new_items,
            "new_rows": NEW_ROWS,
        }


def read_origin(path: Path) -> Origin:
    """A finished run (its selected model.safetensors) or a bundle (whose weights must match the sha256 it records)."""
    path = Path(path)
    document, kind = read_model_dir(path)
    if kind == "run" and not ((path / "summary.json").is_file() and (path / "model.safetensors").is_file()):
        raise ArtifactError(f"--init-from {path} is a run that has not finished (no summary.json)", f"Finish it first: tron train --resume {path}")
    if kind == "bundle" and (document.get("sha256") or {}).get("model.safetensors") != sha256_file(path / "model.safetensors"):
        raise ArtifactError(f"{path / 'model.safetensors'} does not match the sha256 recorded in {path / 'config.json'}", "Re-run: tron export --force")
    fingerprint = catalogue_of(document, kind)
    if fingerprint is None:
        raise ArtifactError(f"{path / 'config.json'} records no catalogue fingerprint", "Warm-start from a run or bundle made by this version of tron")
    return Origin(path, kind, document=document, section=model_of(document), fingerprint=fingerprint)


def _settings(section: dict[str, Any]) -> dict[str, Any]:
    """A model section's settings with the model's defaults filled in (sections written before a setting existed)."""
    spec = MODELS.get(str(section.get("type")), "the parent's model")
    return asdict(spec.config({k: v for k, v in section.items() if k not in ("type", "n_items")}))


def check_origin(origin: Origin, section: dict[str, Any], dataset: Dataset) -> int:
    """How many new items the dataset has over the parent's catalogue; refuses another model or settings, an
    unrelated catalogue or one that does not begin with the parent's, and weights that do not fit the parent."""
    if section["type"] != origin.section.get("type"):
        raise UsageError(
            f"--init-from {origin.path} holds a {origin.section.get('type')} model, not {section['type']}", f"Train --model {origin.section.get('type')}"
        )
    mine, theirs = _settings(section), _settings(origin.section)
    differ = [name for name in mine if mine[name] != theirs.get(name)]
    if differ:
        flags = " ".join(f"--{name.replace('_', '-')} {theirs.get(name)}" for name in differ)
        same = f"--config {origin.path / 'config.json'}" if origin.kind == "run" else flags
        raise UsageError(
            f"--init-from {origin.path}: the model settings differ from the parent's ({', '.join(f'{name} {mine[name]} (the parent: {theirs.get(name)})' for name in differ)})",
            f"Train with the parent's settings: {same}",
        )
    new_items = check_descends(dataset.info, dataset.items().column("id"), parent=(origin.path, origin.fingerprint, origin.n_items), dataset_path=dataset.path)
    check_weights(origin.weights, origin.kind, origin.section, origin.fingerprint)
    return new_items


@torch.no_grad()
def warm_start(model: SessionModel, origin: Origin) -> None:
    """Load the parent's weights into `model` (built for the dataset's catalogue, freshly initialised): every
    weight as it is, the item tables' first M + 1 rows (padding and the parent's items), and each new row as the
    mean of the parent's item rows plus the row it holds now (its initial noise)."""
    tensors = load_tensors(origin.weights, origin.kind, expected_tensors(origin.section))
    tables = {name for name, parameter in model.named_parameters() if any(parameter is table for table in model.table_parameters())}
    known = origin.n_items + 1  # rows 0..M: padding and the parent's items
    for name, value in model.state_dict().items():
        parent = tensors[name].to(value.device, value.dtype)
        if name not in tables:
            value.copy_(parent)
            continue
        value[known:] += parent[1:known].mean(0)  # (N - M, d): the new items' rows
        value[:known] = parent
