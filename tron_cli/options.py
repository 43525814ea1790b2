"""Options a person sets, each declared once: name, default, help, allowed values, the reference's config key and
`tron tune`'s default search range, all in one `Option`.

Training options are fields of `TrainConfig` declared with `option(...)`, a model's settings fields of its config
dataclass declared the same way (`models.setting` is this `option`), a loss's options `Option`s in its `Loss`.
Everything else derives from these declarations: `tron train`'s flags and help, config-file keys and their type
checks, config.json, docs/train-options.md, the man page, the reference-key table and `tron tune`'s default space.

Flags, config keys and config.json share one flat namespace, so an option name belongs to one kind of declarer:
training, a model's settings or a loss's options. Models may share a setting (`hidden_size`), losses an option;
an option that a second kind declares is refused when it is registered, naming both (`claim`).
Nothing here imports torch, click or rich.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

FLOAT32_MAX = 3.4028234663852886e38  # a value that multiplies a score must stay finite in fp32
INT64 = (-(1 << 63), (1 << 63) - 1)  # seeds and counts end up in int64 tensors


def number_problem(value: float | int) -> str | None:
    """What is wrong with a number a person set, or None: a float must be finite and within fp32's range (an
    infinite or NaN weight makes every score NaN or 0), an integer within int64."""
    if isinstance(value, float) and (not math.isfinite(value) or abs(value) > FLOAT32_MAX):
        return f"a finite number within float32's range (±{FLOAT32_MAX:.3g})"
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        return "an integer within int64's range"
    return None


def _anything(value: Any) -> bool:
    return True


@dataclass(frozen=True)
class Option:
    """One option: `tron train --NAME` (dashes for underscores), a config-file key, a field of config.json."""

    name: str
    default: Any
    help: str
    valid: Callable[[Any], bool] = _anything
    requirement: str = ""  # what `valid` asks, for the error message ("must be ...")
    choices: tuple[str, ...] | str | None = None  # allowed values, or "module:REGISTRY" whose names are allowed
    reference: str | None = None  # the reference TRON config key that carries this value over unchanged
    tune: Mapping[str, Any] | tuple[Any, ...] | None = None  # `tron tune`'s default search: {low, high, log} or choices
    shown_default: str | None = None  # what help says of the default when something else decides it (the dataset)


def option(
    default: Any,
    help: str,
    choices: tuple[str, ...] | str | None = None,
    *,
    reference: str | None = None,
    tune: Mapping[str, Any] | tuple[Any, ...] | None = None,
    shown_default: str | None = None,
) -> Any:
    """A config dataclass field declared as an option (its name is the field's)."""
    declaration = Option("", default, help, choices=choices, reference=reference, tune=tune, shown_default=shown_default)
    return field(default=default, metadata={"option": declaration})


def declared(config_class: type) -> dict[str, Option]:
    """{field name: Option} of the fields of a config dataclass that `option` declared, in field order."""
    return {f.name: replace(f.metadata["option"], name=f.name) for f in fields(config_class) if "option" in f.metadata}


# option name -> (kind of declarer, who): "training", "model", "loss"
_OWNERS: dict[str, list[tuple[str, str]]] = {}


def claim(kind: str, who: str, names: Iterable[str]) -> None:
    """Record that `who` (a declarer of `kind`) declares options `names`; a name another kind declares already is
    refused with both named, before anything is recorded."""
    names = list(names)
    for name in names:
        other = next((owner for owner_kind, owner in _OWNERS.get(name, []) if owner_kind != kind), None)
        if other is not None:
            raise ValueError(
                f"{who} declares option {name!r}, which {other} declares too: flags, config keys and config.json share one namespace, so rename one"
            )
    for name in names:
        _OWNERS.setdefault(name, []).append((kind, who))


def release(who: str) -> None:
    """Forget the options of `who` (an entry taken out of its registry)."""
    for name in list(_OWNERS):
        _OWNERS[name] = [owner for owner in _OWNERS[name] if owner[1] != who]
        if not _OWNERS[name]:
            del _OWNERS[name]


def search_space(options: Iterable[Option]) -> dict[str, Any]:
    """{name: dimension} of the options that declare a `tune` range (choices become lists, as a space file writes them)."""
    return {o.name: (list(o.tune) if isinstance(o.tune, tuple) else dict(o.tune)) for o in options if o.tune is not None}
