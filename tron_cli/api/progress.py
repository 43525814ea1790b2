"""Progress bars that work in a terminal and in a Jupyter notebook (rich draws both; a notebook's through ipywidgets,
the notebook extra), and the Python API's
default reporter: bars where a person watches, messages to the `tron_cli` logger, warnings as `TronWarning`.

The CLI's reporter (`cli/_ui.py`) draws the same bars with `progress_task`.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import warnings
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress import Task as ProgressTask
from rich.text import Text

from tron_cli.errors import TronWarning
from tron_cli.reporting import Reporter, Task

LOGGER = logging.getLogger("tron_cli")


def format_value(value: Any) -> str:
    """A number for people: 4 significant digits below 1000, thousands separated above; "-" for no value."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


class _Remaining(ProgressColumn):
    """Time left, from the mean rate since the task's first update. rich's own estimate needs two updates within
    its 30-second window, which a training epoch that reports every 20 slow CPU steps never gives."""

    def render(self, task: ProgressTask) -> Text:
        origin = task.fields.get("origin")  # (completed, time) at the first update
        if task.total is None or origin is None or task.finished:
            return Text("")
        done, elapsed = task.completed - origin[0], task.get_time() - origin[1]
        if done <= 0 or elapsed <= 0:
            return Text("ETA -:--:--", style="progress.remaining")
        left = dt.timedelta(seconds=round(elapsed / done * max(task.total - task.completed, 0)))
        return Text(f"ETA {left}", style="progress.remaining")


class RichTask(Task):
    """One rich progress bar, removed from the screen when closed."""

    def __init__(self, progress: Progress, description: str, total: float | None):
        self._progress = progress
        self._id = progress.add_task(description, total=total, fields="", origin=None)
        progress.start()

    def update(self, advance: float = 0, completed: float | None = None, total: float | None = None, **fields: Any) -> None:
        text = "  ".join(f"{key} {format_value(value)}" for key, value in fields.items())
        kwargs: dict[str, Any] = {"advance": advance, "fields": text}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        self._progress.update(self._id, **kwargs)
        task = next(task for task in self._progress.tasks if task.id == self._id)
        if task.fields["origin"] is None:  # where this run of the task starts (a resumed epoch starts part-way)
            task.fields["origin"] = (task.completed, task.get_time())

    def close(self) -> None:
        self._progress.stop()


def progress_task(console: Console, description: str, total: float | None = None, unit: str = "") -> RichTask:
    """A progress bar on `console`: bytes with their rate when `unit` is "B", else done of total; elapsed time, time
    left and the task's fields beside it."""
    columns: list[ProgressColumn] = [TextColumn("[progress.description]{task.description}"), BarColumn(), TaskProgressColumn()]
    if unit == "B":
        from rich.progress import DownloadColumn, TransferSpeedColumn

        columns += [DownloadColumn(), TransferSpeedColumn()]
    else:
        columns += [MofNCompleteColumn()]
    columns += [TimeElapsedColumn(), _Remaining(), TextColumn("{task.fields[fields]}")]
    return RichTask(Progress(*columns, console=console, transient=True), description, total)


class NotebookReporter(Reporter):
    """The Python API's reporter unless told otherwise: progress bars on stderr when a person can see them (a
    terminal or a Jupyter notebook), messages to the `tron_cli` logger (INFO, details DEBUG), warnings through
    `warnings.warn` as `TronWarning`."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def shows_progress(self) -> bool:
        """In a terminal; in a notebook when ipywidgets is there to draw with (the notebook extra), else rich only warns."""
        if self.console.is_jupyter:
            try:
                import ipywidgets  # noqa: F401
            except ImportError:
                return False
            return True
        return self.console.is_terminal

    def task(self, description: str, total: float | None = None, unit: str = "") -> Task:
        return progress_task(self.console, description, total, unit) if self.shows_progress else Task()

    def info(self, message: str) -> None:
        LOGGER.info(message)

    def detail(self, message: str) -> None:
        LOGGER.debug(message)

    def warn(self, message: str) -> None:
        warnings.warn(message, TronWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """The `stacklevel` of the first frame outside tron_cli, so that a warning names the user's line that caused it."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and str(frame.f_globals.get("__name__", "")).startswith("tron_cli"):
        frame, level = frame.f_back, level + 1
    return level


def reporter_or_default(reporter: Reporter | None) -> Reporter:
    """`reporter`, or a new `NotebookReporter`."""
    return reporter if reporter is not None else NotebookReporter()
