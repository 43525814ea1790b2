"""A model's catalogue: raw item ids <-> dense ids 1..N (from `items.parquet`), and the items by train clicks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


class Catalogue:
    """Raw ids <-> dense ids 1..N of a model's `items.parquet`, and the items ranked by train clicks."""

    def __init__(self, table: pa.Table):
        column = table.column("id")
        self.numeric = pa.types.is_integer(column.type)
        self.id_type = pa.int64() if self.numeric else pa.string()
        values = column.to_numpy()
        self.raw = values.astype(np.int64) if self.numeric else values.astype(str)  # raw[d - 1] is dense id d
        # `tron preprocess` numbers items in raw-id order, so the ids are usually sorted already
        increasing = len(self.raw) < 2 or bool(np.all(self.raw[1:] > self.raw[:-1]))
        self._order = None if increasing else np.argsort(self.raw, kind="stable")
        self._sorted = self.raw if increasing else self.raw[self._order]
        counts = np.asarray(table.column("count"), dtype=np.int64)
        self.by_clicks = np.argsort(-counts, kind="stable") + 1  # dense ids, most clicked first (ties: lower id)

    def __len__(self) -> int:
        return len(self.raw)

    def dense(self, raw: np.ndarray) -> np.ndarray:
        """Dense ids (int64) of raw ids of the catalogue's type; 0 for an id not in the catalogue."""
        if len(raw) == 0 or len(self._sorted) == 0:
            return np.zeros(len(raw), dtype=np.int64)
        position = np.searchsorted(self._sorted, raw).clip(max=len(self._sorted) - 1)
        found = self._sorted[position] == raw
        index = position if self._order is None else self._order[position]
        return np.where(found, index + 1, 0).astype(np.int64)

    def raw_ids(self, dense: np.ndarray) -> np.ndarray:
        return self.raw[np.asarray(dense, dtype=np.int64) - 1]
