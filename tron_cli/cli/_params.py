"""Click parameter types that read their choices from a registry when they are used, not when they are defined.

A model, loss, dataset or output format registered after the CLI module was imported (a plugin, a test) is
then a valid choice, listed in --help and completed on TAB like a built-in one. A registry may be named as
"module:attribute", so that a command's module (imported by `tron --help` for its summary) does not import
the registry's module, and what that imports (torch), until the choice is used.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from tron_cli.options import INT64, number_problem
from tron_cli.registry import Registry


class RegistryChoice(click.Choice):
    """A `click.Choice` over the names in `registry` (plus `extra` names), read on every use."""

    def __init__(self, registry: Registry[Any] | str, extra: tuple[str, ...] = ()):
        self._registry = registry
        self.extra = extra
        self.case_sensitive = True

    @property
    def registry(self) -> Registry[Any]:
        if isinstance(self._registry, str):
            module, attribute = self._registry.split(":")
            self._registry = getattr(importlib.import_module(module), attribute)
        assert isinstance(self._registry, Registry)
        return self._registry

    @property
    def choices(self) -> tuple[str, ...]:
        return (*self.registry.names(), *self.extra)

    @choices.setter
    def choices(self, value: Any) -> None:
        """click's own code may assign choices; they come from the registry, so the value is not kept."""


class Finite(click.FloatRange):
    """A float option: finite and within fp32's range (an infinite or NaN weight would make every score NaN or 0),
    and within [min, max] when given."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        problem = number_problem(float(number))
        if problem:
            self.fail(f"{value!r} is not {problem}", param, ctx)
        return number

    def _describe_range(self) -> str:
        """The help's [range]: nothing when unbounded (click would print "x<=None")."""
        return "" if self.min is None and self.max is None else super()._describe_range()


class Whole(click.IntRange):
    """An integer option within int64 (seeds and counts end up in int64 tensors), and within [min, max] when given."""

    name = "integer"

    def __init__(self, min: int | None = None, max: int | None = None, **kwargs: Any):
        super().__init__(INT64[0] if min is None else min, INT64[1] if max is None else max, **kwargs)

    def _describe_range(self) -> str:
        """The help's [range] without int64's own bounds, which every integer option has anyway."""
        low, high = (None if self.min == INT64[0] else self.min), (None if self.max == INT64[1] else self.max)
        if low is None and high is None:
            return ""
        if high is None:
            return f"x{'>' if self.min_open else '>='}{low}"
        if low is None:
            return f"x{'<' if self.max_open else '<='}{high}"
        return super()._describe_range()
