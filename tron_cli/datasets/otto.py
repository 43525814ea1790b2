"""OTTO (Kaggle `otto/recsys-dataset`): 12.9M train and 1.7M test sessions in JSON lines, pre-split by the source.

The reference keeps the official train/test files and only the clicks (the otto-jsonl reader shifts nothing:
the catalogue maps raw aids to dense ids 1..N later). No support filtering.
"""

from __future__ import annotations

from tron_cli.datasets import DATASETS, DatasetSpec, Preset, Source, read_otto_jsonl

PAGE = "https://www.kaggle.com/datasets/otto/recsys-dataset"

OTTO = DatasetSpec(
    name="otto",
    summary="OTTO's sessions from Kaggle (API token needed), split into train/test.",
    source=Source(
        url="https://www.kaggle.com/api/v1/datasets/download/otto/recsys-dataset",
        archive="recsys-dataset.zip",
        expected=("otto-recsys-train.jsonl", "otto-recsys-test.jsonl"),
        access="kaggle",
        page=PAGE,
    ),
    preset=Preset(
        train_file="otto-recsys-train.jsonl",
        test_file="otto-recsys-test.jsonl",
        split_on="first",
        test_days=None,
        floor_to_day=False,
        min_item_support=1,
        valid_days=7,
    ),
    format="otto-jsonl",
    read=read_otto_jsonl,
)

DATASETS.register(OTTO.name, OTTO)
