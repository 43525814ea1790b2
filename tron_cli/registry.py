"""Named extension points: models, losses, datasets, recommend output formats (and baselines).

Each kind of thing is declared once, in one module, and registered under a name in a `Registry`; everything
else (CLI choices and help, config validation, docs) reads the registry. Other installed packages add their
own through the entry-point group `tron_cli.plugins`: each entry point names a module or a callable that is
imported (and called) once, the first time any registry is read, and registers what it brings:

    [project.entry-points."tron_cli.plugins"]
    my_losses = "my_package.tron_plugin"      # a module whose import calls LOSSES.register(...)

Nothing here imports torch, click or rich.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from tron_cli.errors import UsageError

T = TypeVar("T")
ENTRY_POINT_GROUP = "tron_cli.plugins"

_plugins_loaded = False


def load_plugins() -> None:
    """Import every `tron_cli.plugins` entry point once; a broken plugin is named, not swallowed."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
            if callable(loaded):
                loaded()
        except Exception as error:  # a third-party module can fail in any way; say which one it was
            raise UsageError(
                f"the tron plugin {entry.name!r} ({entry.value}) failed to load: {type(error).__name__}: {error}", "Fix or uninstall that package"
            ) from None


class Registry(Generic[T]):
    """Things of one kind by name, in registration order; the built-in ones register when their module loads."""

    def __init__(self, kind: str, builtins: tuple[str, ...] = ()):
        self.kind = kind  # "model", "loss", ...: used in messages
        self._builtins = builtins  # modules whose import registers the built-in entries
        self._entries: dict[str, T] = {}
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            import importlib

            for module in self._builtins:
                importlib.import_module(module)
        load_plugins()

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add `entry` under `name`; a second entry of the same name is refused unless `replace`."""
        if not replace and name in self._entries:
            raise ValueError(f"a {self.kind} named {name!r} is registered already")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(self._entries)

    def get(self, name: str, option: str | None = None) -> T:
        """The entry called `name`; an unknown name is a usage error that lists the known ones."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            where = f"{option} " if option else ""
            raise UsageError(f"unknown {self.kind} {where}{name!r}", f"Use one of: {', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return list(self._entries.items())
