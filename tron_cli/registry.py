"""Named extension points: models, losses, datasets, recommend output formats (and baselines, trackers, indexes).

Each kind of thing is declared once, in one module, and registered under a name in a `Registry`; everything
else (CLI choices and help, config validation, docs) reads the registry. A registry with a `package` finds its
built-in entries itself: the first time it is read it imports every module of that package (`tron_cli.models`,
`tron_cli.losses`, `tron_cli.datasets`, `tron_cli.outputs`), so a new built-in is one new module and no list is
edited. Other installed packages add their own through the entry-point group `tron_cli.plugins`: each entry
point names a module or a callable that is imported (and called) once, the first time any registry is read,
and registers what it brings:

    [project.entry-points."tron_cli.plugins"]
    my_losses = "my_package.tron_plugin"      # a module whose import calls LOSSES.register(...)

An entry that declares options (a model's settings, a loss's options) claims their names (`options.claim`):
one that another kind declares already is refused at registration, naming both.
Nothing here imports torch, click or rich.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from tron_cli.errors import UsageError
from tron_cli.options import claim, release

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

    def __init__(self, kind: str, package: str | None = None, first: tuple[str, ...] = (), options_of: Callable[[T], Iterable[str]] | None = None):
        self.kind = kind  # "model", "loss", ...: used in messages
        self._package = package  # a package whose modules register the built-in entries when imported
        self._first = first  # modules of the package imported first: their entries lead every listing (TRON's)
        self._options_of = options_of  # the option names an entry declares, claimed in the shared namespace
        self._entries: dict[str, T] = {}
        self._modules: dict[str, str] = {}  # entry name -> the module that registered it
        self._rank: dict[str, int] = {}  # a built-in module -> its place in discovery order
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            modules = self._discovered()
            self._rank = {module: index for index, module in enumerate(modules)}
            for module in modules:
                importlib.import_module(module)
        load_plugins()

    def _discovered(self) -> list[str]:
        """The modules of the package, `first` ones first, then by name."""
        if self._package is None:
            return []
        package = importlib.import_module(self._package)
        found = sorted(module.name for module in pkgutil.iter_modules(package.__path__))
        return [f"{self._package}.{name}" for name in [*self._first, *(name for name in found if name not in self._first)]]

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add `entry` under `name`; a second entry of the same name is refused unless `replace`, and so is an entry
        whose options another kind declares (a loss option called like a training option)."""
        if not replace and name in self._entries:
            raise ValueError(f"a {self.kind} named {name!r} is registered already")
        if self._options_of is not None:
            who, previous = f"{self.kind} {name}", self._entries.get(name)
            release(who)
            try:
                claim(self.kind, who, self._options_of(entry))
            except ValueError:
                if previous is not None:
                    claim(self.kind, who, self._options_of(previous))
                raise
        self._entries[name] = entry
        self._modules.setdefault(name, sys._getframe(1).f_globals.get("__name__", ""))  # a replaced entry keeps its place
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self._modules.pop(name, None)
        release(f"{self.kind} {name}")

    def _ordered(self) -> list[str]:
        """Entry names in the order of their modules' discovery (built-ins; then plugins and tests in the order they
        registered), whichever module happened to be imported first."""
        return sorted(self._entries, key=lambda name: self._rank.get(self._modules.get(name, ""), len(self._rank)))

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(self._ordered())

    def get(self, name: str, option: str | None = None) -> T:
        """The entry called `name`; an unknown name is a usage error that lists the known ones."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            where = f"{option} " if option else ""
            raise UsageError(f"unknown {self.kind} {where}{name!r}", f"Use one of: {', '.join(self._ordered())}") from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return [(name, self._entries[name]) for name in self._ordered()]
