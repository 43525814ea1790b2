"""Dataset presets: where each public dataset's raw files are and how the reference preprocesses them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    reader: str  # "otto-jsonl", "yoochoose" or "diginetica"
    train_file: str
    test_file: str | None  # set: the source comes split in two files
    split_on: str  # the event that decides a time split: "first" or "last" of the session
    test_days: float | None  # single-file sources: span of the test split before the latest session start
    floor_to_day: bool  # Diginetica floors the latest start to midnight before subtracting
    min_item_support: int
    valid_days: float  # default validation span carved from the end of train


PRESETS = {
    "otto": Preset("otto", "otto-jsonl", "otto-recsys-train.jsonl", "otto-recsys-test.jsonl", "first", None, False, 1, 7),
    "synthetic": Preset("synthetic", "otto-jsonl", "train.jsonl", "test.jsonl", "first", None, False, 1, 7),
    "yoochoose": Preset("yoochoose", "yoochoose", "yoochoose-clicks.dat", None, "last", 1, False, 5, 1),
    "diginetica": Preset("diginetica", "diginetica", "train-item-views.csv", None, "first", 7, True, 5, 7),
}
