"""Diginetica (CIKM Cup 2016): `train-item-views.csv` inside `dataset-train-diginetica.zip` on Google Drive.

The reference keeps items with >= 5 views, floors the latest session start to midnight and puts a session in
test when its *first* view falls within the seven days before that. The purchases, `train-purchases.csv` beside
the views, become the sessions' orders (as MultiTRON merges them): they never change which views are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tron_cli.datasets import DATASETS, DatasetSpec, Preset, Source
from tron_cli.errors import InputFormatError
from tron_cli.reporting import Reporter

if TYPE_CHECKING:
    from tron_cli.datasets.readers import RawLog

DRIVE_ID = "0B7XZSACQf0KdenRmMk8yVUU5LWc"
PURCHASES = "train-purchases.csv"
PURCHASES_HINT = "Expected a ;-separated file with header sessionId;userId;timeframe;eventdate;ordernumber;itemId"


def read_diginetica(path: Path, event_types: tuple[str, ...] = ("clicks",), report: Reporter | None = None) -> RawLog:
    """`train-item-views.csv`: `sessionId;userId;itemId;timeframe;eventdate`; time = eventdate (UTC midnight) + timeframe ms."""
    import polars as pl  # here, not at import: the registry imports this module to list dataset names

    from tron_cli.datasets.readers import check_file, first_true, group

    path = check_file(path)
    try:
        frame = pl.read_csv(path, separator=";", schema_overrides={"eventdate": pl.String})
    except pl.exceptions.PolarsError as error:
        raise InputFormatError(
            f"{path}: not a Diginetica views file ({str(error).splitlines()[0]})",
            "Expected a ;-separated file with header sessionId;userId;itemId;timeframe;eventdate",
        ) from None
    if frame.width != 5:
        raise InputFormatError(f"{path}: expected 5 ;-separated columns, found {frame.width}", "Expected sessionId;userId;itemId;timeframe;eventdate")
    session, _user, item, timeframe, date = frame.columns
    days = frame[date].str.to_date("%Y-%m-%d", strict=False)
    if days.is_null().any() or frame[timeframe].is_null().any():
        row = first_true(days.is_null() | frame[timeframe].is_null())
        raise InputFormatError(f"{path}:{row + 2}: unreadable eventdate or timeframe", "Expected eventdate YYYY-MM-DD and timeframe in ms")
    ts = days.cast(pl.Datetime("ms")).dt.epoch("ms").to_numpy().astype("int64") + frame[timeframe].cast(pl.Int64).to_numpy()
    log = group(frame[session], frame[item], ts)
    purchases = path.parent / PURCHASES
    return _with_purchases(log, purchases) if purchases.is_file() and purchases.stat().st_size else log


def _with_purchases(log: RawLog, path: Path) -> RawLog:
    """`train-purchases.csv` (`sessionId;userId;timeframe;eventdate;ordernumber;itemId`) as orders of the views' sessions."""
    import numpy as np
    import polars as pl

    from tron_cli.artifacts.sessions import ORDER
    from tron_cli.datasets.readers import attach_extra, first_true

    try:
        frame = pl.read_csv(path, separator=";", schema_overrides={"eventdate": pl.String})
    except pl.exceptions.PolarsError as error:
        raise InputFormatError(f"{path}: not a Diginetica purchases file ({str(error).splitlines()[0]})", PURCHASES_HINT) from None
    names = {"sessionId", "timeframe", "eventdate", "itemId"}
    if not names <= set(frame.columns):
        raise InputFormatError(f"{path}: columns {', '.join(frame.columns)}, expected {', '.join(sorted(names))} among them", PURCHASES_HINT)
    days = frame["eventdate"].str.to_date("%Y-%m-%d", strict=False)
    if days.is_null().any() or frame["timeframe"].is_null().any():
        row = first_true(days.is_null() | frame["timeframe"].is_null())
        raise InputFormatError(f"{path}:{row + 2}: unreadable eventdate or timeframe", PURCHASES_HINT)
    ts = days.cast(pl.Datetime("ms")).dt.epoch("ms").to_numpy().astype("int64") + frame["timeframe"].cast(pl.Int64).to_numpy()
    item = frame["itemId"].to_arrow()
    return attach_extra(log, frame["sessionId"].cast(pl.Int64).to_numpy(), item=item, ts=ts, types=np.full(frame.height, ORDER, dtype=np.int8))


DIGINETICA = DatasetSpec(
    name="diginetica",
    summary="Diginetica views (CIKM Cup 2016) from Google Drive; last week: test.",
    source=Source(
        url=f"https://drive.google.com/uc?export=download&id={DRIVE_ID}",
        archive="dataset-train-diginetica.zip",
        expected=("train-item-views.csv",),
        access="drive",
        page=f"https://drive.google.com/file/d/{DRIVE_ID}/view",
    ),
    preset=Preset(
        train_file="train-item-views.csv",
        test_file=None,
        split_on="first",
        test_days=7,
        floor_to_day=True,
        min_item_support=5,
        valid_days=7,
    ),
    format="diginetica",
    read=read_diginetica,
)

DATASETS.register(DIGINETICA.name, DIGINETICA)
