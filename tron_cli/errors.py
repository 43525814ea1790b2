"""Failures a user can cause or fix, named where they happen and mapped to exit codes once, at the CLI edge.

Every message is one line: what happened, where (file, line, field or option) and what to do.
Nothing here imports click or rich.
"""

from __future__ import annotations


class TronError(Exception):
    """A runtime failure the user can act on (bad or missing input, failed download, NaN loss): exit 1."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        """The whole message on one line, hint included."""
        message = self.message.rstrip(".")
        return f"{message}. {self.hint}" if self.hint else f"{message}."


class UsageError(TronError):
    """Inconsistent or invalid options: exit 2, like click's own usage errors."""

    exit_code = 2


class OptionError(UsageError):
    """Options that contradict each other or their declarations, refused before anything runs; the CLI shows the
    command's usage line with them, as for click's own usage errors."""


class MissingInputError(TronError):
    """A stage has nothing to work on (no download, dataset or run yet)."""


class InputFormatError(TronError):
    """A malformed record in a user's file: the message names the file and the line or column."""


class ArtifactError(TronError):
    """An artifact that is missing, truncated, of another schema version or otherwise unreadable."""


class OutputError(TronError):
    """An output that cannot be written (a read-only or full file system, no permission, a directory in the way);
    nothing half-written is left behind."""


class DownloadError(TronError):
    """A download that failed, was refused or does not match its checksum."""


class TrainingError(TronError):
    """Training cannot go on (a NaN or infinite loss, for instance); the last good checkpoint is kept."""


class Interrupted(TronError):
    """The user pressed Ctrl-C; whatever could be saved was saved. Exit 130, as shells expect."""

    exit_code = 130


class TronWarning(UserWarning):
    """Something the user may want to change, said once (the Python API's warnings; the CLI prints them as `Warning:` lines)."""
