"""Yoochoose (RecSys Challenge 2015): `yoochoose-clicks.dat` inside `yoochoose-data.7z` on S3.

The reference keeps items with >= 5 clicks and puts a session in test when its *last* click falls within one
day of the latest session start.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tron_cli.datasets import DATASETS, DatasetSpec, Preset, Source
from tron_cli.errors import InputFormatError
from tron_cli.reporting import Reporter

if TYPE_CHECKING:
    from tron_cli.datasets.readers import RawLog

URL = "https://s3-eu-west-1.amazonaws.com/yc-rdata/yoochoose-data.7z"


def read_yoochoose(path: Path, event_types: tuple[str, ...] = ("clicks",), report: Reporter | None = None) -> RawLog:
    """`yoochoose-clicks.dat`: `session,ISO-8601 UTC time,item,category`, no header (every line a click)."""
    import polars as pl  # here, not at import: the registry imports this module to list dataset names

    from tron_cli.datasets.readers import check_file, group, timestamps_ms

    path = check_file(path)
    try:
        frame = pl.read_csv(
            path,
            has_header=False,
            new_columns=["session", "time", "item", "category"],
            schema_overrides={"session": pl.Int64, "time": pl.String, "item": pl.Int64, "category": pl.String},
        )
    except pl.exceptions.PolarsError as error:
        raise InputFormatError(
            f"{path}: not a Yoochoose clicks file ({str(error).splitlines()[0]})", "Expected lines like 1,2014-04-07T10:51:09.277Z,214536502,0"
        ) from None
    ts = timestamps_ms(path, "time", frame["time"], "ms", 1)
    return group(frame["session"], frame["item"], ts)


YOOCHOOSE = DatasetSpec(
    name="yoochoose",
    summary="Yoochoose clicks (RecSys Challenge 2015) from S3; last day: test.",
    source=Source(
        url=URL,
        archive="yoochoose-data.7z",
        expected=("yoochoose-clicks.dat", "yoochoose-buys.dat", "yoochoose-test.dat"),
        access="plain",
        page=URL,
    ),
    preset=Preset(
        train_file="yoochoose-clicks.dat",
        test_file=None,
        split_on="last",
        test_days=1,
        floor_to_day=False,
        min_item_support=5,
        valid_days=1,
    ),
    format="yoochoose",
    read=read_yoochoose,
)

DATASETS.register(YOOCHOOSE.name, YOOCHOOSE)
