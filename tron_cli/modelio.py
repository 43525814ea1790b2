"""Models from and to files: a `model` section in JSON plus weights in safetensors (never pickle).

Run dirs (`config.json` schema run/1) and bundles (`config.json` schema bundle/1) both carry the same
`model` section, so every reader builds the network from JSON (`models.build_model`) and loads weights whose
names, shapes and dtypes are checked against it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tron_cli import artifacts
from tron_cli.errors import ArtifactError, MissingInputError
from tron_cli.models import build_model


def save_weights(model, path: Path, section: dict[str, Any]) -> None:
    artifacts.save_tensors(path, model.state_dict(), metadata={"tron.model": json.dumps(section)})


def load_weights(model, path: Path, kind: str) -> None:
    """Load `path` into `model` after checking every tensor's name, shape and dtype against the model."""
    state = model.state_dict()
    expected = {name: (tuple(tensor.shape), tensor.dtype) for name, tensor in state.items()}
    tensors = artifacts.load_tensors(path, kind, expected)
    model.load_state_dict(tensors)


def read_model_dir(path: Path) -> tuple[dict[str, Any], str]:
    """(config document, kind) of a run dir or a bundle."""
    path = Path(path)
    config_path = path / "config.json"
    if not path.is_dir():
        raise MissingInputError(f"{path} does not exist", "Give a run dir (tron train) or a bundle (tron export)")
    if not config_path.is_file():
        raise ArtifactError(f"{path} is neither a run nor a bundle (no config.json)", "Give a run dir (tron train) or a bundle (tron export)")
    try:
        schema = json.loads(config_path.read_text()).get("schema", "")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise ArtifactError(f"{config_path} is not valid JSON (truncated or corrupt)", "Re-run the command that made it") from None
    kind = "bundle" if str(schema).startswith("bundle/") else "run"
    return artifacts.read_json(config_path, kind), kind


def model_of(document: dict[str, Any]) -> dict[str, Any]:
    """The `model` section of a run's or bundle's config.json. Documents of earlier versions kept GRU4Rec's
    max_length beside it (in `train`, or at the top of a bundle), not in it."""
    section = dict(document.get("model") or {})
    if "max_length" not in section:
        stored = (document.get("train") or {}).get("max_length", document.get("max_length"))
        if stored is not None:
            section["max_length"] = stored
    return section


def verify_bundle(path: Path, document: dict[str, Any]) -> None:
    """Refuse a bundle whose files are missing or differ from the sha256 values that `tron export` recorded in its
    config.json; checked before any of them is parsed."""
    path = Path(path)
    redo = "Re-run: tron export --force (the bundle changed or was damaged since it was exported)"
    recorded = document.get("sha256")
    index = document.get("index")
    required = {"model.safetensors", "items.parquet", *([str(index.get("file"))] if isinstance(index, dict) else [])}
    if not isinstance(recorded, dict) or not required <= set(recorded):
        raise ArtifactError(f"{path / 'config.json'} does not record the sha256 of {', '.join(sorted(required))}", redo)
    for name, digest in sorted(recorded.items()):
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise ArtifactError(f"{path / 'config.json'}: sha256 names {name!r}, not a file of the bundle", redo)
        file = path / name
        if not file.is_file():
            raise ArtifactError(f"{file} is missing", redo)
        if artifacts.sha256_file(file) != digest:
            raise ArtifactError(f"{file} does not match the sha256 recorded in {path / 'config.json'}", redo)


def load_model(path: Path, device=None):
    """(model in eval mode, config document, kind) from a run dir (its selected model.safetensors) or a bundle
    (whose files are first checked against their recorded sha256)."""
    document, kind = read_model_dir(path)
    if kind == "bundle":
        verify_bundle(path, document)
    if kind == "run" and not (Path(path) / "model.safetensors").is_file():
        raise ArtifactError(f"{path} has no model.safetensors yet (training has not finished an epoch)", f"Resume it: tron train --resume {path}")
    model = build_model(model_of(document))
    load_weights(model, Path(path) / "model.safetensors", kind)
    if device is not None:
        model = model.to(device)
    return model.eval(), document, kind
