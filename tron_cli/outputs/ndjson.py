"""JSON lines: one line per session, `{"session", "items", "scores"}`, scores to 6 significant digits."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa

from tron_cli.outputs import OUTPUTS, OutputFormat, Recommended


def _json_number(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else "null"


class JsonLines:
    """One line per session: {"session": ..., "items": [...], "scores": [...]}, scores to 6 significant digits."""

    def __init__(self, handle, id_type: pa.DataType):
        self.handle = handle

    def write(self, batch: Recommended) -> None:
        # formatted by hand, not json.dumps of a dict: several times faster, which matters once scoring is
        # fast (a GPU); "{:.6g}" of a finite float is a valid JSON number
        scores, offsets = batch.scores.tolist(), batch.offsets.tolist()
        # JSON has no NaN or infinity: a score that overflowed is written as null (checked once per batch: rare)
        number = "{:.6g}".format if np.isfinite(batch.scores).all() else _json_number
        lines = []
        for s, (session, ids) in enumerate(zip(batch.session_values(), batch.id_lists())):
            listed = "null" if batch.fallback[s] else "[" + ", ".join(map(number, scores[offsets[s] : offsets[s + 1]])) + "]"
            lines.append(f'{{"session": {json.dumps(session, default=str)}, "items": {json.dumps(ids)}, "scores": {listed}}}\n')
        self.handle.write("".join(lines))
        self.handle.flush()

    def close(self) -> None:
        pass


OUTPUTS.register("ndjson", OutputFormat("ndjson", 'one JSON line per session: {"session", "items", "scores"}', JsonLines))
