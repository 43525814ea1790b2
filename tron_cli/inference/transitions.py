"""A first-order transition prior: P(next | last click) counted on the train split, added to a model's scores.

Session data rewards the last click (on yoochoose-1-64 a first-order Markov chain alone has nearly TRON's
MRR@20), and a network of d 200 does not memorise every item-to-item transition that counts do. With
`tron train --transition-weight W` (W > 0) a run blends the two at scoring time, never in the loss:

    score(i) = model(i) + W * log(1 + P(i | last) / alpha)        alpha = --transition-smoothing

which is the log of the additively smoothed Markov probability, P + alpha, relative to a transition never seen
(the per-row constants drop out of any ranking). Items that never followed the last click get no bonus, so
the prior is a sparse (row, item, bonus) list, a blend of the scorer (`blends.py`): a ranking adds it chunk by
chunk, an item index fetches the last click's successors beside its own candidates. The counts (`transitions.safetensors`: sorted keys
previous * (N + 1) + next and their probabilities) are fitted once from the train split when the run starts
and travel with the run and its bundle; the weight can be changed at evaluation (`tron evaluate
--transition-weight`) to choose it on the validation split without training again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tron_cli.artifacts.sessions import Sessions
from tron_cli.artifacts.tensors import load_tensors, read_tensor_header, save_tensors
from tron_cli.batching import owned_ranges
from tron_cli.errors import ArtifactError
from tron_cli.inference.blends import Bonus, Context

FILE = "transitions.safetensors"
DEFAULT_SMOOTHING = 0.03


def count_pairs(train: Sessions, n_items: int) -> tuple[Tensor, Tensor]:
    """(keys (P,) sorted previous * (N + 1) + next, counts (P,)) of the consecutive clicks of `train`."""
    flat = torch.from_numpy(train.items.astype(np.int64))
    follows = torch.ones(len(flat), dtype=torch.bool)
    follows[torch.from_numpy(train.offsets[:-1].astype(np.int64))] = False  # a session's first click follows nothing
    keep = follows[1:]
    return torch.unique(flat[:-1][keep] * (n_items + 1) + flat[1:][keep], return_counts=True)


def fit(train: Sessions, n_items: int) -> tuple[Tensor, Tensor]:
    """(keys (P,) sorted previous * (N + 1) + next, probabilities (P,) P(next | previous)) of the consecutive
    clicks of `train`."""
    keys, counts = count_pairs(train, n_items)
    leaving = torch.zeros(n_items + 1, dtype=torch.float64).index_add_(0, keys // (n_items + 1), counts.double())
    return keys, (counts.double() / leaving[keys // (n_items + 1)]).float()


@dataclass
class Transitions:
    keys: Tensor  # (P,) int64, sorted
    probabilities: Tensor  # (P,) fp32
    n_items: int
    weight: float
    smoothing: float = DEFAULT_SMOOTHING
    kind: str = "transitions"

    @classmethod
    def counted(cls, train: Sessions, n_items: int, weight: float, smoothing: float = DEFAULT_SMOOTHING) -> Transitions:
        """The prior of the consecutive clicks of `train` at `weight`."""
        keys, probabilities = fit(train, n_items)
        return cls(keys, probabilities, n_items=n_items, weight=weight, smoothing=smoothing)

    def reweighted(self, weight: float) -> Transitions:
        """The same counts at another weight (`tron evaluate --transition-weight` chooses it on validation)."""
        return Transitions(self.keys, self.probabilities, n_items=self.n_items, weight=weight, smoothing=self.smoothing)

    def to(self, device: torch.device | str) -> Transitions:
        return Transitions(self.keys.to(device), self.probabilities.to(device), n_items=self.n_items, weight=self.weight, smoothing=self.smoothing)

    def part(self, context: Context) -> Bonus:
        """Every item that followed each row's last click in train, with its unweighted bonus log(1 + P / alpha)
        (padding (0) and unknown items have none); pairs unique and sorted."""
        previous = context.last
        base = previous * (self.n_items + 1)
        first = torch.searchsorted(self.keys, base)
        rows, entry = owned_ranges(first, torch.searchsorted(self.keys, base + self.n_items + 1) - first)
        return Bonus(rows, self.keys[entry] % (self.n_items + 1), torch.log1p(self.probabilities[entry].double() / self.smoothing))

    def section(self) -> dict[str, Any]:
        return {"kind": self.kind, "weight": self.weight, "smoothing": self.smoothing, "file": FILE}


def save(path: Path, keys: Tensor, probabilities: Tensor, catalogue: str | None) -> None:
    metadata = {"tron.catalogue_sha256": catalogue} if catalogue else {}
    save_tensors(path, {"keys": keys.contiguous(), "probabilities": probabilities.contiguous()}, metadata=metadata)


def load(path: Path, kind: str, n_items: int, weight: float, smoothing: float, device: torch.device | str = "cpu") -> Transitions:
    """The transitions of a run or bundle, their tensors checked by name, dtype and range."""
    header = read_tensor_header(path, kind)
    shape = tuple(header.tensors.get("keys", ((0,), ""))[0])
    tensors = load_tensors(path, kind, {"keys": (shape, torch.int64), "probabilities": (shape, torch.float32)})
    keys, probabilities = tensors["keys"], tensors["probabilities"]
    valid = len(shape) == 1 and (len(keys) == 0 or (int(keys.min()) >= 0 and int(keys.max()) < (n_items + 1) ** 2 and bool((keys[1:] > keys[:-1]).all())))
    if not valid or not bool(((probabilities > 0) & (probabilities <= 1)).all()):
        raise ArtifactError(
            f"{path} does not hold the transitions of {n_items} items (sorted keys, probabilities in (0, 1])", "Re-run the command that made it"
        )
    return Transitions(keys, probabilities, n_items=n_items, weight=weight, smoothing=smoothing).to(device)
