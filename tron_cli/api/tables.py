"""Tables from the Python side: a polars, pandas or pyarrow table becomes a polars DataFrame (the logs
`tron_cli.preprocess` reads) or an Arrow table (the sessions `Recommender.recommend` answers), whichever library
made it. pandas is never imported here: its frames are told apart by their type's module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tron_cli.errors import UsageError

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa


def is_table(value: Any) -> bool:
    """Whether `value` is a polars, pandas or pyarrow table (or record batch)."""
    module = type(value).__module__.split(".")[0]
    return module in ("polars", "pandas", "pyarrow") and type(value).__name__ in ("DataFrame", "Table", "RecordBatch")


def to_polars(table: Any, what: str) -> pl.DataFrame:
    """A polars DataFrame of a polars, pandas or pyarrow table; anything else is a usage error naming `what`."""
    import polars as pl

    if isinstance(table, pl.DataFrame):
        return table
    module = type(table).__module__.split(".")[0]
    if module == "pandas" and type(table).__name__ == "DataFrame":
        return pl.from_pandas(table)
    if module == "pyarrow" and type(table).__name__ in ("Table", "RecordBatch"):
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)  # a table, not a column, comes back as a frame
        return frame
    raise UsageError(f"{what} is a {type(table).__module__}.{type(table).__name__}", "Give a path, or a polars, pandas or pyarrow table")


def to_arrow(table: Any, what: str) -> pa.Table:
    """An Arrow table of a polars, pandas or pyarrow table."""
    import pyarrow as pa

    if isinstance(table, pa.Table):
        return table
    if isinstance(table, pa.RecordBatch):
        return pa.Table.from_batches([table])
    return to_polars(table, what).to_arrow()
