"""The model registry: each model module declares its network, its settings and its training defaults once.

    from tron_cli.models import MODELS, ModelSpec
    MODELS.register("mymodel", ModelSpec("mymodel", MyModel, MyConfig, "One line for --help."))

A model's settings are the fields of its config dataclass (`setting(default, help)` gives each its help text);
`tron train` derives its flags from them, config.json stores them in its `model` section, and `build_model`
turns that section back into the network. `training_defaults` are the training options a model starts from
when it is chosen (GRU4Rec+ takes the reference's), below anything a user sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tron_cli.errors import ArtifactError, UsageError
from tron_cli.models.base import FEEDINGS, SessionModel
from tron_cli.options import Option, declared, number_problem, option
from tron_cli.registry import Registry

setting = option  # a model's setting is declared as any option is: `setting(default, help, choices, reference=, tune=)`


def check_settings(checks: list[tuple[bool, str]]) -> None:
    """For a model config's `__post_init__`: the first failed check is a usage error with its message."""
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_class: Any  # a SessionModel subclass, built as model_class(config, n_items=N)
    config_class: type  # a frozen dataclass whose every field has a default (`setting`)
    summary: str  # one line for --help and docs
    training_defaults: Mapping[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """{name: default} of the model's settings."""
        return {f.name: f.default for f in fields(self.config_class)}

    def config(self, values: Mapping[str, Any]) -> Any:
        """The config dataclass from setting values (unknown names are a usage error)."""
        unknown = sorted(set(values) - set(self.settings()))
        if unknown:
            raise UsageError(f"--{unknown[0].replace('_', '-')} is not a setting of model {self.name}")
        return self.config_class(**values)

    def build(self, config: Any, n_items: int) -> SessionModel:
        if self.model_class.feeding not in FEEDINGS:
            raise ValueError(f"model {self.name}: feeding must be one of {FEEDINGS}")
        return self.model_class(config, n_items=n_items)


MODELS: Registry[ModelSpec] = Registry("model", package="tron_cli.models", first=("sasrec",), options_of=lambda spec: spec.settings())


def all_settings() -> dict[str, tuple[Any, str, tuple[str, ...] | None, list[str]]]:
    """{setting: (default, help, choices, models that have it)} over every registered model, first one's default."""
    out: dict[str, tuple[Any, str, tuple[str, ...] | None, list[str]]] = {}
    for name, spec in MODELS.items():
        for setting_name, declaration in declared(spec.config_class).items():
            if setting_name in out:
                out[setting_name][3].append(name)
            else:
                choices = declaration.choices if isinstance(declaration.choices, tuple) else None
                out[setting_name] = (declaration.default, declaration.help, choices, [name])
    return out


def setting_declarations() -> dict[str, Option]:
    """{setting: its declaration} over every registered model (the first model's, for a shared setting)."""
    out: dict[str, Option] = {}
    for _, spec in MODELS.items():
        for setting_name, declaration in declared(spec.config_class).items():
            out.setdefault(setting_name, declaration)
    return out


def model_section(name: str, config: Any, n_items: int) -> dict[str, Any]:
    """The `model` section of a run's or bundle's config.json."""
    return {"type": name, "n_items": n_items, **asdict(config)}


def build_model(section: Mapping[str, Any]) -> SessionModel:
    """The network a `model` section describes, freshly initialised."""
    kind = section.get("type")
    if not isinstance(kind, str) or kind not in MODELS:
        raise ArtifactError(f"unknown model type {kind!r} in config", f"Known models: {', '.join(MODELS.names())}")
    spec = MODELS.get(kind)
    values = {k: v for k, v in section.items() if k not in ("type", "n_items")}
    unknown = sorted(set(values) - set(spec.settings()))
    if unknown:
        raise ArtifactError(f"unknown model setting {unknown[0]!r} in config", "Re-run: tron train")
    n_items = section.get("n_items")
    if not isinstance(n_items, int) or isinstance(n_items, bool) or n_items < 1:
        raise ArtifactError(f"the model section's n_items is {n_items!r}, not a positive integer", "Re-run: tron train")
    for name, value in values.items():
        problem = setting_type_problem(spec.settings()[name], value)
        if problem:
            raise ArtifactError(f"the model section's {name} is {value!r}, not {problem}", "Re-run: tron train")
    try:
        config = spec.config_class(**values)
    except UsageError as error:
        raise ArtifactError(f"the model section does not describe a valid {kind} ({error.message})", "Re-run: tron train") from None
    return spec.build(config, n_items)


def setting_type_problem(default: Any, value: Any) -> str | None:
    """What a setting's value should be when its type is not its default's (a string where a size belongs), else None."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) and not number_problem(float(value)) else "a finite number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    return None
