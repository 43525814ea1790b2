"""The terminal side of every command: a stderr console, progress bars, messages, and the only writes to stdout."""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tron_cli.api.progress import format_value, progress_task
from tron_cli.reporting import Reporter, Task

# verbosity at which each kind of output still shows: -q (-1) keeps results and warnings, -qq (-2) only errors
RESULTS, WARNINGS, MESSAGES, DETAILS = -1, -1, 0, 1


class UI(Reporter):
    """Global options of the root command, shared by every subcommand through `ctx.obj`."""

    def __init__(self, verbosity: int = 0, progress: bool = True, color: str = "auto"):
        self.verbosity = verbosity
        self.progress = progress
        self.color = color
        self._build()

    def _build(self) -> None:
        no_color = self.color == "never" or (self.color == "auto" and "NO_COLOR" in os.environ)
        self.console = self._console(stderr=True, no_color=no_color)
        self.show_progress = self.progress and self.verbosity >= MESSAGES and self.console.is_terminal

    def _console(self, stderr: bool, no_color: bool, width: int | None = None) -> Console:
        return Console(stderr=stderr, no_color=no_color, force_terminal=True if self.color == "always" else None, highlight=False, soft_wrap=True, width=width)

    def adjust(self, verbose: int = 0, quiet: int = 0, no_progress: bool = False, color: str | None = None) -> None:
        """The global options given after the subcommand (`tron train ... -q`) add to those given before it."""
        self.verbosity += verbose - quiet
        self.progress = self.progress and not no_progress
        self.color = color or self.color
        self._build()

    # ------------------------------------------------------------------ Reporter

    def task(self, description: str, total: float | None = None, unit: str = "") -> Task:
        return progress_task(self.console, description, total, unit) if self.show_progress else Task()

    def info(self, message: str) -> None:
        if self.verbosity >= MESSAGES:
            self.console.print(message, markup=False)

    def detail(self, message: str) -> None:
        if self.verbosity >= DETAILS:
            self.console.print(message, markup=False, style="dim")

    def warn(self, message: str) -> None:
        if self.verbosity >= WARNINGS:
            self.console.print(f"Warning: {message}", markup=False, style="yellow")

    # ------------------------------------------------------------------ output

    def result(self, message: str) -> None:
        """The one line a command exists to report, on stderr: shown with -q, hidden by -qq."""
        if self.verbosity >= RESULTS:
            self.console.print(message, markup=False)

    def table(self, title: str, columns: list[str], rows: list[list[Any]], stdout: bool = False, numbers: bool = True) -> None:
        """A table of results for people: on stderr (shown with -q, hidden by -qq), or on stdout where the
        table is the data itself (`tron ls`, `tron info`), always shown there; columns after the first are
        right-aligned `numbers`, or left-aligned text."""
        if not stdout and self.verbosity < RESULTS:
            return
        table = Table(title=title, title_justify="left")
        for index, column in enumerate(columns):
            table.add_column(column, justify="right" if index and numbers else "left")
        for row in rows:
            table.add_row(*[format_value(cell) for cell in row])
        console = self.console if not stdout else self._console(stderr=False, no_color=self.console.no_color)
        if stdout and not console.is_terminal:  # piped (`tron ls | grep x`): one line a row, not wrapped at 80 columns
            console = self._console(stderr=False, no_color=self.console.no_color, width=1000)
        console.print(table)

    @staticmethod
    def emit_json(document: Any) -> None:
        """The one JSON object a command prints on stdout with --json (a NaN or infinite value as null: valid JSON)."""
        from tron_cli.artifacts.documents import finite

        click.echo(json.dumps(finite(document), indent=None, allow_nan=False, default=str))


def shown(path: str | os.PathLike[str]) -> str:
    """A path for people: relative to the working directory when it lies under it (`--json` keeps it absolute)."""
    absolute = os.path.abspath(path)
    here = os.getcwd()
    return os.path.relpath(absolute, here) if absolute.startswith(here.rstrip(os.sep) + os.sep) else absolute


def human_size(size: int) -> str:
    """Bytes for people, in powers of 1000 as `ls -h --si` and `du --si` count them: 1.2 MB."""
    if size < 1000:
        return f"{size} B"
    value, unit = float(size), "B"
    for unit in ("kB", "MB", "GB"):  # noqa: B007 (the unit the loop stops at is the one to print)
        value /= 1000
        if value < 1000:
            break
    return f"{value:,.1f} {unit}"


def when(created: str | None) -> str:
    """An ISO time as `2026-11-30 16:04` (UTC, as written)."""
    return created[:16].replace("T", " ") if created else "-"


def ui_of(ctx: click.Context) -> UI:
    """The root's UI, or a default one when a subcommand is invoked on its own (tests, completion)."""
    obj = ctx.find_object(UI)
    if obj is None:
        obj = ctx.ensure_object(UI)
    return obj


pass_ui = click.make_pass_decorator(UI, ensure=True)
