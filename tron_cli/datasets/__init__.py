"""Datasets by name: one module per dataset declares a `DatasetSpec` and registers it in `DATASETS`.

A declaration says where the raw files come from (`Source`) or how they are generated (`generate` and its
`Parameter`s), how the reference preprocesses them (`Preset`) and how to read them (`read`). `tron download`
and `tron preprocess` know datasets only through this registry, so a dataset added by a plugin (or a test)
is one the CLI accepts:

    from tron_cli.datasets import DATASETS, DatasetSpec, Preset, Source, read_otto_jsonl
    SPEC = DatasetSpec("mine", "My click log.", Preset("train.jsonl", "test.jsonl"), "otto-jsonl", read_otto_jsonl,
                       source=Source("https://example.org/mine.zip", "mine.zip", ("train.jsonl", "test.jsonl")))
    DATASETS.register(SPEC.name, SPEC)

The registry imports every built-in dataset module to list the names (for --help and TAB completion), so a
dataset module must be cheap to import: readers import polars when they run (synthetic.py brings numpy, no more).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tron_cli.registry import Registry
from tron_cli.reporting import Reporter

if TYPE_CHECKING:
    from tron_cli.datasets.readers import RawLog

ACCESS = ("plain", "kaggle", "drive")
SPLIT_ON = ("first", "last")


@dataclass(frozen=True)
class Source:
    """Where a dataset's raw files come from, and what its archive must hold."""

    url: str
    archive: str  # file name of the download in the output directory
    expected: tuple[str, ...]  # files the archive must contain (matched by base name, at any depth)
    access: str = "plain"  # "plain", "kaggle" (basic auth from kaggle.json) or "drive" (Google Drive's confirmation page)
    page: str = ""  # where a person can download it by hand (default: url)
    sha256: str | None = None  # the archive's digest, when known: checked on every download from the network

    def __post_init__(self) -> None:
        if self.access not in ACCESS:
            raise ValueError(f"Source.access is {self.access!r}, expected one of {', '.join(ACCESS)}")
        if not self.page:
            object.__setattr__(self, "page", self.url)
        if self.sha256 is not None:
            object.__setattr__(self, "sha256", self.sha256.lower())


@dataclass(frozen=True)
class Preset:
    """How `tron preprocess NAME` treats the raw files by default (each one a flag can override)."""

    train_file: str
    test_file: str | None = None  # set: the source comes split in two files
    split_on: str = "first"  # the event that decides a time split: "first" or "last" of the session
    test_days: float | None = None  # single-file sources: span of the test split before the latest session start
    floor_to_day: bool = False  # Diginetica floors the latest start to midnight before subtracting
    min_item_support: int = 1
    valid_days: float = 7  # validation span carved from the end of train

    def __post_init__(self) -> None:
        if self.split_on not in SPLIT_ON:
            raise ValueError(f"Preset.split_on is {self.split_on!r}, expected one of {', '.join(SPLIT_ON)}")
        if self.test_file is None and self.test_days is None:
            raise ValueError("a Preset without test_file needs test_days: the test split is cut by time")


@dataclass(frozen=True)
class Parameter:
    """An integer parameter of a generator; `tron download` offers it as --NAME."""

    name: str
    default: int
    help: str
    minimum: int | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# (raw file, OTTO event types to keep, progress) -> events grouped by session: the whole log, or blocks of whole
# sessions one after another (which preprocessing then holds one at a time)
Reader = Callable[[Path, "tuple[str, ...]", Reporter], "RawLog | Iterable[RawLog]"]
# (empty output directory, progress, **parameters) -> the files written
Generate = Callable[..., "list[Path]"]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: downloaded (`source`) or generated (`generate`), then preprocessed by `preset` and `read`."""

    name: str
    summary: str  # one line, shown by `tron download --help`
    preset: Preset
    format: str  # name of the raw format, recorded in dataset.json ("otto-jsonl" is the shared OTTO reader)
    read: Reader
    source: Source | None = None
    generate: Generate | None = None
    parameters: tuple[Parameter, ...] = ()

    def __post_init__(self) -> None:
        if (self.source is None) == (self.generate is None):
            raise ValueError(f"dataset {self.name!r} needs exactly one of source (downloaded) and generate (generated)")
        if self.parameters and self.generate is None:
            raise ValueError(f"dataset {self.name!r} has parameters but no generator")

    @property
    def generated(self) -> bool:
        return self.generate is not None

    def defaults(self) -> dict[str, int]:
        return {parameter.name: parameter.default for parameter in self.parameters}


def read_otto_jsonl(path: Path, event_types: tuple[str, ...], report: Reporter) -> Iterator[RawLog]:
    """The shared OTTO JSON-lines reader (`readers.read_otto_jsonl`, a block of sessions at a time), imported when it runs."""
    from tron_cli.datasets.readers import read_otto_jsonl as read

    return read(path, event_types, report)


DATASETS: Registry[DatasetSpec] = Registry("dataset", package="tron_cli.datasets", first=("otto", "yoochoose", "diginetica"))
