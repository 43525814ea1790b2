"""Databases tron writes through a URL (a `tron tune` study, an MLflow store), checked before any work is done.

Optuna and MLflow open their stores lazily and fail deep inside a study or a training run, MLflow only after
retrying for about 100 s: an unknown dialect, a missing driver, a file that is not a database (truncated, or
something else), a read-only file, an unreachable server. `check_writable` opens the store and takes a write lock
once, then lets go, and turns any of these into one line naming the flag and the store, so that a command stops
before it has written anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from tron_cli.errors import TronError, UsageError

SQLITE_HEADER = b"SQLite format 3\x00"
DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb", "mssql", "oracle")  # the database URLs MLflow and Optuna take


def sqlite_file(url: str) -> Path | None:
    """The file of a `sqlite:///PATH` URL (None for another dialect or an in-memory database)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?")[0]
    return Path(path) if path and path != ":memory:" and not path.startswith("file:") else None  # file:...?mode=ro: SQLite's own URI


def _check_sqlite_file(path: Path, what: str, hint: str) -> None:
    if path.exists():
        if not path.is_file():
            raise TronError(f"{what} {path} is not a file", hint)
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
        if head and head != SQLITE_HEADER:
            raise TronError(f"{what} {path} is not a SQLite database (truncated, or another kind of file)", hint)
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
            raise TronError(f"{what} {path} is read-only (SQLite also writes a journal beside it)", hint)
    elif not os.access(path.parent if path.parent.exists() else Path("."), os.W_OK):
        raise TronError(f"{what} {path} cannot be created: {path.parent} is read-only", hint)


def check_writable(url: str, what: str, hint: str) -> None:
    """Open the store at `url` and take its write lock once (rolled back), or fail with one line; `what` names it
    for people ("the study database", "the MLflow store")."""
    import sqlalchemy
    from sqlalchemy import exc

    path = sqlite_file(url)
    existed = path is not None and path.exists()
    if path is not None:
        _check_sqlite_file(path, what, hint)
    try:
        engine = sqlalchemy.create_engine(url)
    except exc.NoSuchModuleError:
        dialect = url.split(":", 1)[0]
        raise UsageError(f"{what} {url}: unknown database dialect {dialect!r}", "Use sqlite:///PATH, postgresql://..., or mysql://...") from None
    except exc.ArgumentError:
        raise UsageError(f"{what} {url!r} is not a database URL", "Use sqlite:///PATH, postgresql://..., or mysql://...") from None
    except ImportError as error:
        raise TronError(f"{what} {url}: its database driver is not installed ({error})", "Install the driver for that dialect") from None
    try:
        with engine.connect() as connection:
            if url.startswith("sqlite:"):
                # a write inside a transaction that is rolled back: a read-only or damaged file fails here
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                connection.exec_driver_sql("CREATE TABLE tron_write_probe (x INTEGER)")
                connection.exec_driver_sql("ROLLBACK")
            else:
                connection.exec_driver_sql("SELECT 1")
    except exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", error)).splitlines()[0]
        raise TronError(f"{what} {url} cannot be written: {reason}", hint) from None
    finally:
        engine.dispose()
    if path is not None and not existed:
        path.unlink(missing_ok=True)  # the probe made it: the store itself creates it when it starts
