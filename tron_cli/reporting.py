"""How the core reports progress and messages without knowing about terminals.

Core functions take a `Reporter`; the CLI passes one that draws rich progress bars on stderr, a library
caller gets the silent default. Nothing here imports click or rich.
"""

from __future__ import annotations


class Task:
    """One progress bar: `update(advance=n)` or `update(completed=n)`, plus free-form fields shown beside it."""

    def update(self, advance: float = 0, completed: float | None = None, total: float | None = None, **fields) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Reporter:
    """Silent by default: subclasses show progress, messages and warnings to a person."""

    def task(self, description: str, total: float | None = None, unit: str = "") -> Task:
        return Task()

    def info(self, message: str) -> None:
        pass

    def detail(self, message: str) -> None:
        """Shown only with -v."""

    def warn(self, message: str) -> None:
        pass


SILENT = Reporter()
