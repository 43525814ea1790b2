"""`tron_cli.load(path) -> Recommender`: a bundle or run loaded once, answering sessions of raw item ids with their
top-k raw item ids and scores, in memory (`recommend`) or file to file (`recommend_file`, which `tron recommend`
runs). Sessions go through the model `batch_size` at a time, so memory holds one batch of work whatever the input's
size (and the answers, k per session).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, overload

from tron_cli.api.handles import PathLike
from tron_cli.api.pipeline import pairs
from tron_cli.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np
    import pandas as pd
    import polars as pl
    import pyarrow as pa

    from tron_cli.inference.predictor import Predictor
    from tron_cli.inference.retrieval import Filters
    from tron_cli.inference.session_input import Batch
    from tron_cli.reporting import Reporter

RawId = int | str  # an item id as the log had it: the catalogue's ids are all integers, or all strings
SESSIONS_TABLE = "sessions table"  # how messages name a table handed to `recommend`


@dataclass(frozen=True)
class Recommendation:
    """One session's answer: raw item ids, best first, with their scores (None when the session had no known item
    and got the most popular items), and how many of its ids the model did not know (skipped)."""

    items: list[RawId]
    scores: list[float] | None
    unknown: int


class Recommender:
    """A trained model ready to recommend: made by `tron_cli.load`."""

    def __init__(self, predictor: Predictor, reporter: Reporter) -> None:
        self._predictor = predictor
        self._reporter = reporter

    def __repr__(self) -> str:
        return f"Recommender({str(self.path)!r}, {self.n_items:,} items)"

    @property
    def path(self) -> Path:
        """The bundle or run it was loaded from."""
        return self._predictor.path

    @property
    def n_items(self) -> int:
        """Items in the catalogue."""
        return len(self._predictor.catalogue)

    @property
    def max_length(self) -> int:
        """Clicks of a session the model reads: the most recent ones."""
        return int(self._predictor.max_length)

    def _filters(self, allow: Iterable[RawId] | None, deny: Iterable[RawId] | None) -> Filters:
        from tron_cli.stages.recommend import id_array

        numeric = self._predictor.catalogue.numeric
        hint = f"Give raw item ids ({'integers' if numeric else 'strings'}, as the log had them)"
        lists = [
            None if ids is None else id_array(list(ids), numeric, where=what, label=lambda i: f"item {i}", hint=hint)
            for ids, what in ((allow, "allow"), (deny, "deny"))
        ]
        return self._predictor.filters(lists[0], lists[1])

    @overload
    def recommend(
        self,
        sessions: Iterable[Sequence[RawId]],
        k: int = 20,
        exclude_seen: bool = False,
        allow: Iterable[RawId] | None = None,
        deny: Iterable[RawId] | None = None,
        order_weight: float | None = None,
        batch_size: int = 1024,
    ) -> list[Recommendation]: ...

    @overload
    def recommend(
        self,
        sessions: pl.DataFrame | pd.DataFrame | pa.Table,
        k: int = 20,
        exclude_seen: bool = False,
        allow: Iterable[RawId] | None = None,
        deny: Iterable[RawId] | None = None,
        order_weight: float | None = None,
        batch_size: int = 1024,
    ) -> pl.DataFrame: ...

    def recommend(
        self,
        sessions: Iterable[Sequence[RawId]] | pl.DataFrame | pd.DataFrame | pa.Table,
        k: int = 20,
        exclude_seen: bool = False,
        allow: Iterable[RawId] | None = None,
        deny: Iterable[RawId] | None = None,
        order_weight: float | None = None,
        batch_size: int = 1024,
    ) -> pl.DataFrame | list[Recommendation]:
        """The top-`k` raw item ids of each session, best first, with their scores.

        `sessions` is a list (or any iterable) of sessions, each a list of raw item ids, oldest first: the answer is a
        list of `Recommendation` in the same order. Or a polars, pandas or pyarrow table with columns session and
        items (a list of raw ids): the answer is a polars DataFrame with columns session, items, scores (null for a
        session without a known item, which gets the most popular items) and unknown (ids skipped as unknown).
        Unknown ids are skipped and counted, not refused. `exclude_seen` leaves out the session's own items, `allow`
        and `deny` restrict the catalogue, `order_weight` picks a MultiTRON model's trade-off [1 - w, w]."""
        from tron_cli.api.tables import is_table

        if k < 1 or batch_size < 1:
            raise UsageError("-k and --batch-size must be at least 1")
        if order_weight is not None and not 0 <= order_weight <= 1:
            raise UsageError("--order-weight must be from 0 to 1")
        filters = self._filters(allow, deny)
        if is_table(sessions):
            return self._recommend_table(sessions, k=k, exclude_seen=exclude_seen, filters=filters, order_weight=order_weight, batch_size=batch_size)
        if isinstance(sessions, (str, bytes)) or not isinstance(sessions, Iterable):
            raise UsageError(
                f"sessions is a {type(sessions).__name__}", "Give a list of sessions (lists of raw item ids), or a table with columns session and items"
            )
        answers: list[Recommendation] = []
        for batch in self._list_batches(iter(cast("Iterable[Sequence[RawId]]", sessions)), batch_size):
            result, unknown = self._answer(batch, k=k, exclude_seen=exclude_seen, filters=filters, order_weight=order_weight)
            scores = result.scores.tolist()
            for s, ids in enumerate(result.id_lists()):
                start, end = int(result.offsets[s]), int(result.offsets[s + 1])
                answers.append(Recommendation(ids, None if result.fallback[s] else scores[start:end], int(unknown[s])))
        self._warn(sum(answer.unknown for answer in answers), sum(answer.unknown > 0 for answer in answers), sum(answer.scores is None for answer in answers))
        return answers

    def _list_batches(self, sessions: Iterator[Sequence[RawId]], batch_size: int) -> Iterator[Batch]:
        """Batches of `batch_size` sessions given as lists of raw ids (a session's position names it in messages). An
        id that cannot be the catalogue's (a string that is no integer, for integer ids) is unknown, as in JSON lines."""
        import numpy as np

        from tron_cli.errors import InputFormatError
        from tron_cli.inference.session_input import Batch, RecordProblem, usable_ids

        numeric = self._predictor.catalogue.numeric
        first = 0
        while chunk := list(islice(sessions, batch_size)):
            for position, session in enumerate(chunk):
                if isinstance(session, (str, bytes)) or not isinstance(session, Sequence):
                    raise UsageError(f"session {first + position} is a {type(session).__name__}, not a list of raw item ids")
            lengths = np.fromiter((len(session) for session in chunk), dtype=np.int64, count=len(chunk))
            owner = np.repeat(np.arange(len(chunk)), lengths)
            flat = [item for session in chunk for item in session]
            try:
                ids, positions = usable_ids(flat, numeric, lambda i, first=first, owner=owner: f"session {first + int(owner[i])}: an item")
            except RecordProblem as problem:
                raise InputFormatError(f"sessions: {problem}", "Give raw item ids as the log had them") from None
            usable = np.zeros(len(flat), dtype=bool)
            usable[positions] = True
            offsets = np.concatenate([[0], np.cumsum(np.bincount(owner[usable], minlength=len(chunk)))]).astype(np.int64)
            yield Batch(
                list(range(first, first + len(chunk))),
                [f"session {first + i}" for i in range(len(chunk))],
                offsets=offsets,
                items=np.array(ids, dtype=np.int64) if numeric else np.array(ids, dtype=str),
                dropped=np.bincount(owner[~usable], minlength=len(chunk)).astype(np.int64),
            )
            first += len(chunk)

    def _answer(self, batch: Batch, k: int, exclude_seen: bool, filters: Filters, order_weight: float | None) -> tuple[Any, np.ndarray]:
        from tron_cli.stages.recommend import recommend_batch

        return recommend_batch(self._predictor, batch, k=k, exclude_seen=exclude_seen, filters=filters, order_weight=order_weight)

    def _recommend_table(self, sessions: Any, k: int, exclude_seen: bool, filters: Filters, order_weight: float | None, batch_size: int) -> pl.DataFrame:
        import pyarrow as pa

        from tron_cli.api.tables import to_arrow
        from tron_cli.inference.session_input import check_session_table, table_batches

        table = to_arrow(sessions, "sessions")
        check_session_table(table.schema, SESSIONS_TABLE)
        table = table.select(["session", "items"])
        parts = []
        totals = [0, 0, 0]  # unknown ids, sessions with some, fallback sessions
        record_batches = (table.slice(start, batch_size).combine_chunks().to_batches()[0] for start in range(0, table.num_rows, batch_size))
        for batch in table_batches(record_batches, SESSIONS_TABLE, self._predictor.catalogue.numeric):
            result, unknown = self._answer(batch, k=k, exclude_seen=exclude_seen, filters=filters, order_weight=order_weight)
            items, scores = result.arrow_lists(self._predictor.catalogue.id_type)
            parts.append(pa.table({"session": batch.sessions, "items": items, "scores": scores, "unknown": pa.array(unknown, type=pa.int64())}))
            totals = [totals[0] + int(unknown.sum()), totals[1] + int((unknown > 0).sum()), totals[2] + int(result.fallback.sum())]
        self._warn(*totals)
        if not parts:
            schema = pa.schema(
                [
                    ("session", table.schema.field("session").type),
                    ("items", pa.list_(self._predictor.catalogue.id_type)),
                    ("scores", pa.list_(pa.float32())),
                    ("unknown", pa.int64()),
                ]
            )
            return _frame(schema.empty_table())
        return _frame(pa.concat_tables(parts))

    def _warn(self, unknown_ids: int, unknown_sessions: int, fallback: int) -> None:
        from tron_cli.stages.recommend import warn_unknown

        warn_unknown(self._reporter, unknown_ids, unknown_sessions, fallback)

    def recommend_file(
        self,
        input: PathLike = "-",
        output: PathLike = "-",
        *,
        k: int = 20,
        exclude_seen: bool = False,
        format: str | None = None,
        input_format: str = "auto",
        batch_size: int = 1024,
        allow: PathLike | None = None,
        deny: PathLike | None = None,
        on_error: str = "fail",
        order_weight: float | None = None,
    ) -> dict[str, Any]:
        """Stream the sessions of a file (JSON lines, OTTO lines or Parquet; "-" is stdin) into a file of their top-k
        (JSON lines, Parquet or OTTO's CSV by `format` or the name; "-" is stdout), as `tron recommend` does; `allow`
        and `deny` are files of raw ids, one a line. Returns counts: sessions, fallback, unknown_ids, ..."""
        from tron_cli.stages.recommend import RecommendOptions
        from tron_cli.stages.recommend import recommend as run

        options = RecommendOptions(
            k=k,
            exclude_seen=exclude_seen,
            batch_size=batch_size,
            input_format=input_format,
            output_format=format,
            allow=None if allow is None else Path(allow),
            deny=None if deny is None else Path(deny),
            on_error=on_error,
            order_weight=order_weight,
        )
        return run(self._predictor, str(input), str(output), options=options, report=self._reporter)


def _frame(table: pa.Table) -> pl.DataFrame:
    import polars as pl

    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)  # a table, not a column, comes back as a frame
    return frame


def load(
    path: PathLike | None = None,
    *,
    device: str = "auto",
    exact: bool = False,
    index_param: Mapping[str, int] | Sequence[str] = (),
    reporter: Reporter | None = None,
) -> Recommender:
    """A bundle (`tron_cli.export`), its name under $TRON_HOME/bundles/, or a finished run, loaded to recommend
    (default: the newest bundle, else the newest finished run). A bundle with an item index is searched through it
    unless `exact`; `index_param` tunes the search ({"ef_search": 256}). `device`: auto, cpu or cuda."""
    from tron_cli.api.progress import reporter_or_default
    from tron_cli.inference.predictor import load_predictor
    from tron_cli.runtime import resolve_device
    from tron_cli.workspace import home

    model = home.resolve_model(None if path is None else Path(path))
    predictor = load_predictor(model, resolve_device(device), exact, pairs(index_param))
    return Recommender(predictor, reporter_or_default(reporter))
