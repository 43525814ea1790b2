"""The result of `tron_cli.evaluate`: a read-only mapping from metric names ("recall@20", "mrr@10", ...; OTTO's
task: "otto_clicks" ... "otto_total") to values, with the 95% intervals of `bootstrap` and everything else
`tron evaluate --json` prints beside them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

METRIC_PREFIXES = ("otto_",)  # OTTO's task: its recall per event type and their weighted total
METRIC_NAMES = ("hypervolume",)  # MultiTRON: the area its front dominates


def is_metric(key: str, value: Any) -> bool:
    """Whether a result entry is a metric's value (not a count, an interval bound, a setting or a path)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or key.endswith(("_low", "_high")):
        return False
    return "@" in key or key.startswith(METRIC_PREFIXES) or key in METRIC_NAMES


class Metrics(Mapping[str, float]):
    """metrics["recall@20"]: every metric at every cutoff; `low` and `high` hold the bounds of the 95% confidence
    intervals with `bootstrap`; `result` is everything `tron evaluate --json` prints (counts, split, protocol,
    dataset); `run` is the run or bundle evaluated (None for a baseline)."""

    result: dict[str, Any]
    run: Path | None
    low: dict[str, float]
    high: dict[str, float]

    def __init__(self, result: dict[str, Any], run: Path | None = None) -> None:
        self.result = result
        self.run = run
        self._values = {key: float(value) for key, value in result.items() if is_metric(key, value)}
        self.low = {key.removesuffix("_low"): float(value) for key, value in result.items() if key.endswith("_low")}
        self.high = {key.removesuffix("_high"): float(value) for key, value in result.items() if key.endswith("_high")}

    def __getitem__(self, name: str) -> float:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name!r}: {value:.4f}" for name, value in self._values.items())
        return f"Metrics({{{shown}}})"

    def interval(self, name: str) -> tuple[float, float]:
        """The 95% confidence interval of metric `name` (evaluate with `bootstrap` resamples); KeyError without one."""
        return self.low[name], self.high[name]

    @property
    def split(self) -> str | None:
        return self.result.get("split")

    @property
    def n_targets(self) -> int | None:
        return self.result.get("n_targets")
