"""The default layout under $TRON_HOME (default: the current directory) and how stages find each other's output.

    data/raw/NAME/   downloads        (complete when manifest.json exists)
    data/NAME/       datasets         (complete when dataset.json exists)
    runs/NAME/       training runs    (complete when summary.json exists)
    bundles/NAME/    exported models  (complete when config.json exists)

A stage called without a path takes the newest complete output of the stage before it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tron_cli.artifacts.schemas import is_safe_name
from tron_cli.errors import MissingInputError, UsageError


def check_name(name: str, what: str, flag: str) -> str:
    """`name` when it is safe (`is_safe_name`), else a usage error naming the flag: a name never becomes a path
    outside its directory under $TRON_HOME."""
    if not is_safe_name(name):
        raise UsageError(
            f"{flag} {name!r} is not a valid {what} name: it must be one plain name, without '/', '\\' or a leading '.'",
            f"Give a name such as {what}-1" + (", or --out PATH to write elsewhere" if flag == "--name" else ""),
        )
    return name


def home() -> Path:
    """$TRON_HOME, else the current directory; a TRON_HOME that names a file is blamed on the variable."""
    path = Path(os.environ.get("TRON_HOME") or ".")
    if path.exists() and not path.is_dir():
        raise UsageError(f"TRON_HOME={path} is a file, not a directory", "Point TRON_HOME at a directory (or unset it to use the current one)")
    return path


def raw_root() -> Path:
    return home() / "data" / "raw"


def datasets_root() -> Path:
    return home() / "data"


def runs_root() -> Path:
    return home() / "runs"


def bundles_root() -> Path:
    return home() / "bundles"


def _newest(root: Path, marker: str) -> Path | None:
    """The directory under `root` whose `marker` file is newest; hidden (temporary) directories are skipped."""
    if not root.is_dir():
        return None
    candidates = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and (d / marker).is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda d: ((d / marker).stat().st_mtime_ns, d.name))


def latest_download() -> Path:
    found = _newest(raw_root(), "manifest.json")
    if found is None:
        raise MissingInputError(f"no download under {raw_root()}", "Run first: tron download synthetic (or otto, yoochoose, diginetica)")
    return found


def latest_dataset() -> Path:
    root = datasets_root()
    found = None
    if root.is_dir():
        found = _newest(root, "dataset.json")
    if found is None:
        raise MissingInputError(f"no dataset under {root}", "Run first: tron preprocess")
    return found


def latest_run() -> Path:
    found = _newest(runs_root(), "summary.json")
    if found is None:
        raise MissingInputError(f"no finished run under {runs_root()}", "Run first: tron train")
    return found


def latest_model() -> Path:
    """The newest bundle, or failing that the newest finished run (both can serve recommendations)."""
    found = _newest(bundles_root(), "config.json")
    if found is None:
        found = _newest(runs_root(), "summary.json")
    if found is None:
        raise MissingInputError(f"no bundle under {bundles_root()} and no run under {runs_root()}", "Run first: tron train, then tron export")
    return found


def _by_name(path: Path | None, root: Path) -> Path | None:
    """`path` as given, or the directory of that name under `root` when `path` is a bare name that is not a directory here."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_dir() and len(path.parts) == 1 and (root / path).is_dir():
        return root / path
    return path


def resolve_model(path: Path | None) -> Path:
    """A bundle or run to serve: the path, a bundle's name, or the newest bundle (else run) when None."""
    return _by_name(path, bundles_root()) or latest_model()


def resolve_run(path: Path | None) -> Path:
    """A run: the path, a run's name under runs/, or the newest finished run when None."""
    return _by_name(path, runs_root()) or latest_run()


def new_run_dir(stem: str) -> Path:
    """runs/STEM-1, runs/STEM-2, ...: the first name not taken."""
    root = runs_root()
    index = 1
    while (root / f"{stem}-{index}").exists():
        index += 1
    return root / f"{stem}-{index}"
