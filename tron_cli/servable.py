"""A trained model ready to answer: the network in eval mode, its catalogue, and how it reads sessions.

Loaded from a bundle (`tron export`: its own items.parquet) or a run dir (the items.parquet of the dataset it
was trained on, which must not have changed since). Used by `tron recommend` and the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tron_cli import artifacts
from tron_cli.catalogue import Catalogue
from tron_cli.errors import ArtifactError, MissingInputError
from tron_cli.modelio import load_model


@dataclass
class Servable:
    """What recommending needs: the model in eval mode, its catalogue and how it reads sessions."""

    model: Any
    catalogue: Catalogue
    event_types: tuple[str, ...]  # OTTO event types the training dataset kept
    path: Path
    kind: str  # "bundle" or "run"
    document: dict[str, Any]  # the bundle's or run's config.json

    @property
    def max_length(self) -> int:
        """Clicks of a session the model reads (the most recent ones)."""
        return self.model.max_length


def load_servable(path: Path, device: torch.device) -> Servable:
    """A bundle (its own items.parquet) or a run dir (the items.parquet of the dataset it was trained on)."""
    path = Path(path)
    if not path.is_dir():
        raise MissingInputError(f"model {path} does not exist", "Give a bundle (tron export) or a run dir (tron train)")
    model, document, kind = load_model(path, device)
    if kind == "bundle":
        table = artifacts.read_items(path / "items.parquet")
        event_types = tuple(document.get("event_types", ["clicks"]))
        expected = document.get("n_items")
    else:
        trained = document.get("dataset", {})
        dataset = artifacts.read_dataset(Path(trained.get("path", "")))
        if dataset.info.get("catalogue_sha256") != trained.get("catalogue_sha256"):
            raise ArtifactError(
                f"the dataset of {path} changed since it was trained ({dataset.path})", "Recommend from a bundle made when the run finished (tron export)"
            )
        table = dataset.items()
        event_types = tuple(dataset.info.get("parameters", {}).get("event_types", ["clicks"]))
        expected = dataset.n_items
    if table.num_rows != model.n_items or expected != model.n_items:
        raise ArtifactError(f"{path}: the model scores {model.n_items} items but its catalogue has {table.num_rows}", "Re-run: tron export")
    return Servable(model, Catalogue(table), event_types, path, kind, document)
