"""The terminal side of every command: a stderr console, progress bars, messages, and the only writes to stdout."""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tron_cli.reporting import Reporter, Task


class _RichTask(Task):
    def __init__(self, progress: Progress, description: str, total: float | None):
        self._progress = progress
        self._id = progress.add_task(description, total=total, fields="")
        progress.start()

    def update(self, advance: float = 0, completed: float | None = None, total: float | None = None, **fields) -> None:
        text = "  ".join(f"{key} {_fmt(value)}" for key, value in fields.items())
        kwargs: dict[str, Any] = {"advance": advance, "fields": text}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        self._progress.update(self._id, **kwargs)

    def close(self) -> None:
        self._progress.stop()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


class UI(Reporter):
    """Global options of the root command, shared by every subcommand through `ctx.obj`."""

    def __init__(self, verbosity: int = 0, progress: bool = True, color: str = "auto"):
        self.verbosity = verbosity
        no_color = color == "never" or (color == "auto" and "NO_COLOR" in os.environ)
        self.console = Console(
            stderr=True,
            no_color=no_color,
            force_terminal=True if color == "always" else None,
            highlight=False,
            soft_wrap=True,
        )
        self.show_progress = progress and verbosity >= 0 and self.console.is_terminal

    # ------------------------------------------------------------------ Reporter

    def task(self, description: str, total: float | None = None, unit: str = "") -> Task:
        if not self.show_progress:
            return Task()
        columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), TaskProgressColumn()]
        if unit == "B":
            from rich.progress import DownloadColumn, TransferSpeedColumn

            columns += [DownloadColumn(), TransferSpeedColumn()]
        else:
            columns += [MofNCompleteColumn()]
        columns += [TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[fields]}")]
        return _RichTask(Progress(*columns, console=self.console, transient=True), description, total)

    def info(self, message: str) -> None:
        if self.verbosity >= 0:
            self.console.print(message, markup=False)

    def detail(self, message: str) -> None:
        if self.verbosity >= 1:
            self.console.print(message, markup=False, style="dim")

    def warn(self, message: str) -> None:
        if self.verbosity >= -1:
            self.console.print(f"Warning: {message}", markup=False, style="yellow")

    # ------------------------------------------------------------------ output

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> None:
        """A table for people, on stderr (unless -q)."""
        if self.verbosity < 0:
            return
        table = Table(title=title, title_justify="left")
        for index, column in enumerate(columns):
            table.add_column(column, justify="left" if index == 0 else "right")
        for row in rows:
            table.add_row(*[_fmt(cell) for cell in row])
        self.console.print(table)

    @staticmethod
    def emit_json(document: Any) -> None:
        """The one JSON object a command prints on stdout with --json."""
        click.echo(json.dumps(document, indent=None, allow_nan=False, default=str))


def ui_of(ctx: click.Context) -> UI:
    """The root's UI, or a default one when a subcommand is invoked on its own (tests, completion)."""
    obj = ctx.find_object(UI)
    if obj is None:
        obj = ctx.ensure_object(UI)
    return obj


pass_ui = click.make_pass_decorator(UI, ensure=True)
