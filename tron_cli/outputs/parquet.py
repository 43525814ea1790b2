"""Parquet: columns session, items (raw ids) and scores, written batch by batch to a file."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tron_cli.errors import InputFormatError
from tron_cli.inference.session_input import INT64_RANGE
from tron_cli.outputs import OUTPUTS, OutputFormat, Recommended


class ParquetOutput:
    """Columns session (as given), items (list of raw ids), scores (list<float32>, null for a popular fallback).

    The session column's type comes from the first batch: the input's Parquet type, else int64 when every
    session id is a JSON integer, else string (strings as they are, other JSON values as JSON text).
    """

    def __init__(self, path: Path, id_type: pa.DataType):
        self.path = path
        self.id_type = id_type
        self.writer: pq.ParquetWriter | None = None
        self.session_type: pa.DataType | None = None

    def _sessions(self, batch: Recommended) -> pa.Array:
        if isinstance(batch.sessions, pa.Array):
            return batch.sessions if self.session_type is None else batch.sessions.cast(self.session_type)
        values = batch.sessions
        integers = all(type(v) is int and INT64_RANGE[0] <= v <= INT64_RANGE[1] for v in values)
        if self.session_type is None:
            self.session_type = pa.int64() if integers and values else pa.string()
        if self.session_type == pa.int64():
            if not integers:
                bad = next(i for i, v in enumerate(values) if not (type(v) is int and INT64_RANGE[0] <= v <= INT64_RANGE[1]))
                raise InputFormatError(
                    f"{batch.where[bad]}: session {json.dumps(values[bad], default=str)} is not an integer, but the Parquet output's session column is int64 (from the first sessions)",
                    "Use one type of session id, or --format ndjson",
                )
            return pa.array(values, type=pa.int64())
        return pa.array([v if isinstance(v, str) else json.dumps(v, default=str) for v in values], type=pa.string())

    def write(self, batch: Recommended) -> None:
        sessions = self._sessions(batch)
        items, scores = batch.arrow_lists(self.id_type)
        table = pa.table({"session": sessions, "items": items, "scores": scores})
        if self.writer is None:
            self.session_type = sessions.type
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is None:  # no session: an empty table of the same layout
            schema = pa.schema([("session", self.session_type or pa.int64()), ("items", pa.list_(self.id_type)), ("scores", pa.list_(pa.float32()))])
            self.writer = pq.ParquetWriter(self.path, schema, compression="zstd")
        self.writer.close()


OUTPUTS.register("parquet", OutputFormat("parquet", "columns session, items (raw ids), scores", ParquetOutput, (".parquet", ".pq"), needs_file=True))
