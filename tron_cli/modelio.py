"""Models from and to files: a `model` section in JSON plus weights in safetensors (never pickle).

Run dirs (`config.json` schema run/1) and bundles (`config.json` schema bundle/1) both carry the same
`model` section, so every reader builds the network from JSON (`models.build_model`) and loads weights whose
names, shapes and dtypes are checked against it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tron_cli.artifacts.documents import read_json
from tron_cli.artifacts.files import sha256_file
from tron_cli.artifacts.schemas import MADE_BY
from tron_cli.artifacts.sessions import Dataset
from tron_cli.artifacts.tensors import TensorHeader, check_tensor_header, load_tensors, read_tensor_header, save_tensors
from tron_cli.errors import ArtifactError, MissingInputError
from tron_cli.models import build_model
from tron_cli.safe_json import JsonRefused, parse
from tron_cli.workspace import home

CATALOGUE_KEY = "tron.catalogue_sha256"  # the catalogue the weights were trained on (dataset.json's fingerprint)
MODEL_KEY = "tron.model"  # the model section they belong to
EPOCH_KEY = "tron.epoch"  # the epoch they are from


def save_weights(model, path: Path, section: dict[str, Any], catalogue: str | None = None, epoch: int | None = None) -> None:
    """The model's weights as safetensors, bound to their model section and catalogue by the file's metadata."""
    metadata = {MODEL_KEY: json.dumps(section)}
    if catalogue is not None:
        metadata[CATALOGUE_KEY] = catalogue
    if epoch is not None:
        metadata[EPOCH_KEY] = str(epoch)
    save_tensors(path, model.state_dict(), metadata=metadata)


def expected_tensors(section: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
    """{name: (shape, dtype)} of the network a model section describes, built on the meta device: no memory is
    allocated, whatever sizes the section claims."""
    import torch

    with torch.device("meta"):
        model = build_model(section)
    return {name: (tuple(tensor.shape), tensor.dtype) for name, tensor in model.state_dict().items()}


def check_weights(path: Path, kind: str, section: dict[str, Any], catalogue: str | None) -> TensorHeader:
    """Refuse weights that do not belong to `section` and the catalogue `catalogue`, from the file's header alone
    (before the network is built or a tensor read): tensor names, shapes and dtypes must be the section's, and the
    catalogue fingerprint and model section the file records (weights written before they were recorded have
    none: then the config's fingerprint, checked by the caller, decides) must be these."""
    path = Path(path)
    expected = expected_tensors(section)  # the section's own values are checked first (a string where a size belongs)
    header = read_tensor_header(path, kind)
    recorded = header.metadata.get(CATALOGUE_KEY)
    if recorded is not None and catalogue is not None and recorded != catalogue:
        raise ArtifactError(
            f"{path} holds weights trained on another catalogue (fingerprint {recorded[:12]}..., not {catalogue[:12]}...)",
            "Use the weights of a run trained on this dataset, or train one",
        )
    stored = header.metadata.get(MODEL_KEY)
    if stored is not None:
        try:
            their = parse(stored)
        except JsonRefused:
            raise ArtifactError(f"{path}: its metadata {MODEL_KEY} is not JSON", f"Re-run: {MADE_BY.get(kind, 'tron train')}") from None
        differ = sorted(key for key in set(their) & set(section) if their[key] != section[key]) if isinstance(their, dict) else ["model"]
        if differ:
            raise ArtifactError(
                f"{path} holds weights of another model ({differ[0]} {their.get(differ[0]) if isinstance(their, dict) else their!r}, not {section.get(differ[0])!r})",
                "Use the weights that were trained with this config.json",
            )
    check_tensor_header(header, path, kind, expected)
    return header


def load_weights(model, path: Path, kind: str, catalogue: str | None = None, section: dict[str, Any] | None = None) -> None:
    """Load `path` into `model` after checking every tensor's name, shape and dtype against the model (and, given
    the model's section, that the file belongs to it and to the catalogue `catalogue`: `check_weights`)."""
    if section is not None:
        check_weights(path, kind, section, catalogue)
    state = model.state_dict()
    expected = {name: (tuple(tensor.shape), tensor.dtype) for name, tensor in state.items()}
    tensors = load_tensors(path, kind, expected)
    model.load_state_dict(tensors)


def catalogue_of(document: dict[str, Any], kind: str) -> str | None:
    """The catalogue fingerprint a run's or bundle's config.json records."""
    if kind == "bundle":
        return document.get("catalogue_sha256")
    trained = document.get("dataset")
    return trained.get("catalogue_sha256") if isinstance(trained, dict) else None


def read_model_dir(path: Path) -> tuple[dict[str, Any], str]:
    """(config document, kind) of a run dir or a bundle."""
    path = Path(path)
    config_path = path / "config.json"
    if not path.is_dir():
        raise MissingInputError(f"{path} does not exist", "Give a run dir (tron train) or a bundle (tron export)")
    if not config_path.is_file():
        raise ArtifactError(f"{path} is neither a run nor a bundle (no config.json)", "Give a run dir (tron train) or a bundle (tron export)")
    try:
        schema = parse(config_path.read_bytes()).get("schema", "")
    except (JsonRefused, AttributeError) as error:
        where = error.at(config_path) if isinstance(error, JsonRefused) else f"{config_path}: not a JSON object"
        raise ArtifactError(f"{where} (truncated or corrupt?)", "Re-run the command that made it") from None
    kind = "bundle" if str(schema).startswith("bundle/") else "run"
    return read_json(config_path, kind), kind


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
    required |= blend_files(document)
    if not isinstance(recorded, dict) or not required <= set(recorded):
        raise ArtifactError(f"{path / 'config.json'} does not record the sha256 of {', '.join(sorted(required))}", redo)
    for name, digest in sorted(recorded.items()):
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise ArtifactError(f"{path / 'config.json'}: sha256 names {name!r}, not a file of the bundle", redo)
        file = path / name
        if not file.is_file():
            raise ArtifactError(f"{file} is missing", redo)
        if sha256_file(file) != digest:
            raise ArtifactError(f"{file} does not match the sha256 recorded in {path / 'config.json'}", redo)


def blend_files(document: dict[str, Any]) -> set[str]:
    """The files of the blends a bundle's config.json names (`scorer` section; a `transitions` object before it)."""
    scorer = document.get("scorer")
    if isinstance(scorer, dict):
        return {str(blend["file"]) for blend in scorer.get("blends") or [] if isinstance(blend, dict) and "file" in blend}
    return {"transitions.safetensors"} if document.get("transitions") else set()


def load_model(path: Path, device=None):
    """(model in eval mode, config document, kind) from a run dir (its selected model.safetensors) or a bundle
    (whose files are first checked against their recorded sha256). The blends a run or bundle scores with beside
    the network are `inference.scorer.load_scorer`'s."""
    document, kind = read_model_dir(path)
    if kind == "bundle":
        verify_bundle(path, document)
    if kind == "run" and not (Path(path) / "model.safetensors").is_file():
        if (Path(path) / "summary.json").is_file():  # finished: resuming has nothing to do, so say what does help
            raise ArtifactError(
                f"{path} finished training, but its model.safetensors is missing (deleted or moved)",
                f"Restore the file, use the run's bundle, or train it again: tron train --config {Path(path) / 'config.json'} --out {path} --force",
            )
        raise ArtifactError(f"{path} has no model.safetensors yet (training has not finished an epoch)", f"Resume it: tron train --resume {path}")
    section = model_of(document)
    weights = Path(path) / "model.safetensors"
    check_weights(weights, kind, section, catalogue_of(document, kind))  # before the network takes any memory
    model = build_model(section)
    load_weights(model, weights, kind)
    if device is not None:
        model = model.to(device)
    return model.eval(), document, kind


def check_same_catalogue(document: dict[str, Any], dataset: Dataset, where: Path) -> None:
    """A model scores its own catalogue: refuse a dataset whose items differ from the run's."""
    trained = document.get("dataset", {})
    if not isinstance(trained, dict):  # a bundle names its dataset and carries the fingerprint itself
        trained = {"name": trained, "catalogue_sha256": document.get("catalogue_sha256")}
    if trained.get("catalogue_sha256") != dataset.info.get("catalogue_sha256") or document["model"]["n_items"] != dataset.n_items:
        raise ArtifactError(
            f"{where} was trained on dataset {trained.get('name')!r} ({document['model']['n_items']} items), not on {dataset.path} ({dataset.n_items} items)",
            "Pass --data with the run's own dataset",
        )


def dataset_of(document: dict[str, Any], model_path: Path) -> Path:
    """A run records its dataset's path; a bundle only its name, looked up under $TRON_HOME/data/."""
    trained = document.get("dataset")
    data = Path(trained["path"]) if isinstance(trained, dict) else home.datasets_root() / trained if isinstance(trained, str) else None
    if data is None or not data.exists():
        raise MissingInputError(f"the dataset of {model_path} is not at {data}", "Pass --data DIR")
    return data
