"""Catalogues that grow from day to day: a parent catalogue (of a dataset, run or bundle), a child that keeps
its dense ids and appends the new items after them, and the record of that lineage in dataset.json.

`tron preprocess --catalogue-from PARENT` numbers today's items with `extend`; `tron train --init-from PARENT`
checks with `check_descends` that the dataset's catalogue begins with the parent's, so that the parent's item
rows are the child's first rows. Only files are read here (JSON, Parquet): no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tron_cli.artifacts.documents import read_json
from tron_cli.artifacts.files import directory_kind, sha256_file
from tron_cli.artifacts.sessions import catalogue_fingerprint, read_dataset, read_items
from tron_cli.errors import ArtifactError, MissingInputError, UsageError

KINDS = ("dataset", "run", "bundle")


@dataclass(frozen=True)
class Parent:
    """A catalogue to grow from: where it is, what made it, its raw ids in dense-id order and their fingerprint."""

    path: Path
    kind: str  # "dataset", "run" or "bundle"
    ids: pa.Array
    fingerprint: str

    def __len__(self) -> int:
        return len(self.ids)


def resolve(given: Path, roots: dict[str, Path], flag: str) -> Path:
    """A dataset, run or bundle directory: `given` when it is a path, else the directory of that name under the
    first of `roots` (kind -> its directory under $TRON_HOME, in order of preference) that holds one."""
    given = Path(given)
    if given.is_dir() or len(given.parts) != 1:
        if not given.is_dir():
            raise MissingInputError(f"{flag} {given} does not exist", "Give a dataset (tron preprocess), run (tron train) or bundle (tron export)")
        return given
    found = [root / given for root in roots.values() if (root / given).is_dir()]
    if not found:
        kinds = " or ".join(roots)
        raise MissingInputError(f"{flag} {given}: no {kinds} of that name under {', '.join(str(root) for root in roots.values())}", "Give its path")
    return found[0]


def read_parent(path: Path, flag: str = "--catalogue-from") -> Parent:
    """The catalogue of a dataset, a run (its dataset's, which must not have changed since) or a bundle (its own
    items.parquet, checked against the sha256 the bundle records), with its fingerprint checked."""
    path = Path(path)
    kind = directory_kind(path)
    if kind not in KINDS:
        raise ArtifactError(f"{flag} {path} is not a dataset, run or bundle (no dataset.json or config.json)", "Give a dataset, run or bundle directory")
    if kind == "dataset":
        dataset = read_dataset(path)
        table, recorded = dataset.items(), dataset.info.get("catalogue_sha256")
    elif kind == "run":
        document = read_json(path / "config.json", "run")
        trained = document["dataset"]
        data = Path(trained["path"])
        if not (data / "dataset.json").is_file():
            raise MissingInputError(f"the dataset of {path} is not at {data}", f"Give {flag} its bundle (tron export) or its dataset instead")
        dataset = read_dataset(data)
        table, recorded = dataset.items(), trained.get("catalogue_sha256")
    else:
        document = read_json(path / "config.json", "bundle")
        digest = (document.get("sha256") or {}).get("items.parquet")
        if digest is None or sha256_file(path / "items.parquet") != digest:
            raise ArtifactError(f"{path / 'items.parquet'} does not match the sha256 recorded in {path / 'config.json'}", "Re-run: tron export --force")
        table, recorded = read_items(path / "items.parquet"), document.get("catalogue_sha256")
    ids = table.column("id").combine_chunks()
    fingerprint = catalogue_fingerprint(ids)
    if recorded is not None and fingerprint != recorded:
        raise ArtifactError(f"the catalogue of {path} changed since it was made (its fingerprint is not the one recorded)", "Re-run the command that made it")
    return Parent(path, kind, ids, fingerprint)


@dataclass(frozen=True)
class Extension:
    """Today's catalogue numbered after a parent's: `ids` (N,) raw ids in dense order (the parent's M first), and
    the dense id of each of today's item codes (0: not in the catalogue)."""

    ids: pa.Array
    dense_of_code: np.ndarray  # (U,) int32
    in_parent: np.ndarray  # (U,) bool: the code's item is one of the parent's
    n_parent: int

    def record(self, parent: Parent, present: np.ndarray) -> dict[str, Any]:
        """dataset.json's `catalogue_from`: the parent and how many of its items are kept (seen today), unseen
        (absent today, ids kept, count 0), and how many items are new; `present` (U,) marks today's codes that
        occur in a split."""
        kept = int((self.in_parent & present).sum())
        return {
            "path": str(parent.path.resolve()),
            "kind": parent.kind,
            "catalogue_sha256": parent.fingerprint,
            "n_items": self.n_parent,
            "kept": kept,
            "unseen": self.n_parent - kept,
            "new": len(self.ids) - self.n_parent,
        }


def _comparable(ids: pa.Array) -> pa.Array:
    """Raw ids as int64 or string, whatever integer or string width they were stored with."""
    return ids.cast(pa.int64()) if pa.types.is_integer(ids.type) else ids.cast(pa.string())


def parent_codes(parent: Parent, uniques: pa.Array, where: str) -> np.ndarray:
    """(U,) bool: which of today's distinct raw ids `uniques` are items of the parent; refuses ids of another type."""
    mine, theirs = _comparable(uniques), _comparable(parent.ids)
    if mine.type != theirs.type:
        kinds = {pa.int64(): "integers", pa.string(): "strings"}
        raise UsageError(
            f"--catalogue-from {parent.path} has item ids that are {kinds[theirs.type]}, and {where}'s are {kinds[mine.type]}",
            "Give the parent made from the same kind of log",
        )
    return np.asarray(pc.is_in(mine, value_set=theirs), dtype=bool)


def extend(parent: Parent, uniques: pa.Array, catalogue: np.ndarray, in_parent: np.ndarray) -> Extension:
    """Number today's catalogue (`catalogue` (U,) bool over the codes of `uniques`, today's sorted distinct raw ids)
    after `parent`: an item of the parent keeps its dense id, a new one gets the next id in raw-id order, and the
    parent's items absent today keep theirs."""
    mine, theirs = _comparable(uniques), _comparable(parent.ids)
    position = np.asarray(pc.index_in(mine, value_set=theirs).fill_null(-1), dtype=np.int64)  # (U,) row in the parent, -1: new
    new = catalogue & ~in_parent
    dense = np.zeros(len(uniques), dtype=np.int64)
    dense[in_parent] = position[in_parent] + 1
    dense[new] = len(parent) + np.arange(1, int(new.sum()) + 1)
    ids = pa.concat_arrays([theirs, mine.take(pa.array(np.flatnonzero(new)))])
    return Extension(ids, dense.astype(np.int32), in_parent, len(parent))


def check_descends(dataset_info: dict[str, Any], dataset_ids: pa.Array, parent: tuple[Path, str, int], dataset_path: Path) -> int:
    """How many new items a dataset has over the catalogue a model starts from, `parent` (its directory, catalogue
    fingerprint and number of items): 0 for the same catalogue. Refuses a dataset preprocessed without
    `--catalogue-from` (unrelated catalogues) and one whose catalogue does not begin with the parent's."""
    path, fingerprint, n_items = parent
    if dataset_info.get("catalogue_sha256") == fingerprint:
        return 0
    lineage = dataset_info.get("catalogue_from")
    if not isinstance(lineage, dict):
        raise UsageError(
            f"the catalogue of {dataset_path} is not related to that of {path}: the dataset was not preprocessed with --catalogue-from",
            f"Preprocess today's log again with --catalogue-from {path}, so that its items keep their ids",
        )
    if len(dataset_ids) < n_items or catalogue_fingerprint(dataset_ids[:n_items]) != fingerprint:
        raise UsageError(
            f"the catalogue of {path} ({n_items:,} items) is not a prefix of the catalogue of {dataset_path} ({len(dataset_ids):,} items,"
            f" grown from {lineage.get('path')})",
            f"Preprocess with --catalogue-from {path}, or start from the model trained on {lineage.get('path')}",
        )
    return len(dataset_ids) - n_items
