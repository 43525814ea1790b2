"""Yoochoose (RecSys Challenge 2015): `yoochoose-clicks.dat` inside `yoochoose-data.7z` on S3.

The reference keeps items with >= 5 clicks and puts a session in test when its *last* click falls within one
day of the latest session start. The purchases, `yoochoose-buys.dat` beside the clicks, become the sessions'
orders (as MultiTRON merges them): they never change which clicks or sessions are kept.
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
BUYS = "yoochoose-buys.dat"


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
    ts = timestamps_ms(path, "time", values=frame["time"], unit="ms", row_offset=1)
    log = group(frame["session"], frame["item"], ts)
    buys = path.parent / BUYS
    return _with_buys(log, buys) if buys.is_file() and buys.stat().st_size else log


def _with_buys(log: RawLog, path: Path) -> RawLog:
    """`yoochoose-buys.dat` (`session,ISO-8601 time,item,price,quantity`) as orders of the clicks' sessions."""
    import numpy as np
    import polars as pl

    from tron_cli.artifacts.sessions import ORDER
    from tron_cli.datasets.readers import attach_extra, timestamps_ms

    try:
        frame = pl.read_csv(
            path,
            has_header=False,
            new_columns=["session", "time", "item", "price", "quantity"],
            schema_overrides={"session": pl.Int64, "time": pl.String, "item": pl.Int64, "price": pl.String, "quantity": pl.String},
        )
    except pl.exceptions.PolarsError as error:
        raise InputFormatError(
            f"{path}: not a Yoochoose buys file ({str(error).splitlines()[0]})", "Expected lines like 420374,2014-04-06T18:44:58.314Z,214537888,12462,1"
        ) from None
    ts = timestamps_ms(path, "time", values=frame["time"], unit="ms", row_offset=1)
    return attach_extra(log, frame["session"].to_numpy(), item=frame["item"].to_arrow(), ts=ts, types=np.full(frame.height, ORDER, dtype=np.int8))


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
