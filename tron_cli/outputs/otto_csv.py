"""OTTO's Kaggle submission: `session_type,labels`, one row per session and event type."""

from __future__ import annotations

import csv
import json

import pyarrow as pa

from tron_cli.outputs import OUTPUTS, OutputFormat, Recommended, id_lists


class SubmissionCsv:
    """OTTO's Kaggle submission: `session_type,labels`, then <session>_clicks, _carts and _orders. A MultiTRON
    model answers each type at its own order weight (`choices.KAGGLE_ORDER_WEIGHTS`: clicks 0, carts 0.5,
    orders 1); any other model's single list (the next click) fills all three rows."""

    TYPES = ("clicks", "carts", "orders")

    def __init__(self, handle, id_type: pa.DataType):
        self.handle = handle
        self.writer = csv.writer(handle, lineterminator="\n")
        self.writer.writerow(["session_type", "labels"])

    def write(self, batch: Recommended) -> None:
        rows = []
        lists = {kind: id_lists(*batch.typed[kind]) if batch.typed else batch.id_lists() for kind in self.TYPES}
        for s, session in enumerate(batch.session_values()):
            name = session if isinstance(session, str) else json.dumps(session, default=str)
            rows += [[f"{name}_{kind}", " ".join(map(str, lists[kind][s]))] for kind in self.TYPES]
        self.writer.writerows(rows)
        self.handle.flush()

    def close(self) -> None:
        pass


OUTPUTS.register("csv", OutputFormat("csv", "OTTO's Kaggle submission: session_type,labels", SubmissionCsv, (".csv",), per_event_type=True))
