"""Settings declared once: type, default, range or choices, documentation, live or not.

A settings class is a frozen dataclass whose fields are made with :func:`setting` (plain
fields work too: their type is their default's). Sections nest (a field whose default is
another settings dataclass, :func:`section`). From that one declaration this module
derives everything else:

* :func:`merge`: mappings (YAML, ROS parameters, ``--set a.b=v``) onto an instance, keys
  checked (unknown ones named, with the closest valid key) and values coerced to the
  declared type (an integer is accepted for a float, nothing else is converted);
* :func:`check`: ranges and choices, then the class's own ``cross_check()`` for rules
  between fields;
* :func:`declared`: the flat, dotted list of declarations (:class:`Declared`) that the ROS
  parameter descriptors, the live/read-only split and the documentation table are built from.

Choices may be a zero-argument callable returning the accepted names, so a setting that
picks an entry of a registry is checked against that registry (:func:`registry_names`).

Used by :mod:`ros2_affect.config` (pipeline), :mod:`ros2_affect.node.parameters` (node
settings) and ``training.config`` (training runs).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, TypeVar, Union

from ros2_affect.errors import ConfigError, did_you_mean

_KEY = "ros2_affect.setting"

T = TypeVar("T")

Choices = Union[Tuple[str, ...], Callable[[], Iterable[str]]]


@dataclass(frozen=True)
class Setting:
    """What :func:`setting` attaches to a dataclass field (its metadata)."""

    doc: str = ""
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Choices = ()
    live: bool = False

    def accepted(self) -> Tuple[str, ...]:
        """The accepted values of a choice setting (empty: any value of its type)."""
        return tuple(self.choices() if callable(self.choices) else self.choices)


def setting(
    default: Any,
    doc: str = "",
    *,
    range: Optional[Tuple[Optional[float], Optional[float]]] = None,  # noqa: A002  (reads as the declaration)
    choices: Choices = (),
    live: bool = False,
) -> Any:
    """A dataclass field declared with its documentation and constraints.

    Args:
        default: the default value; its type is the setting's type (``dict``/``list``
            defaults are copied for each instance).
        doc: one-line (or longer) description: ROS parameter descriptions, docs table.
        range: inclusive ``(low, high)`` for numbers; ``None`` on one side leaves it open.
        choices: accepted values, or a callable returning them (a registry's names).
        live: may change while running (a node parameter applied in place).
    """
    low, high = range if range is not None else (None, None)
    metadata = {_KEY: Setting(doc, low, high, choices, live)}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type) -> Any:
    """A nested section of settings (its defaults are ``cls()``)."""
    return field(default_factory=cls)


def registry_names(module: str, attribute: str, *extra: str) -> Callable[[], Tuple[str, ...]]:
    """Choices that are the names of a registry, looked up each time they are checked.

    ``registry_names("ros2_affect.backends", "BACKENDS", "none")``: the registered backends,
    plus ``"none"``. The registries live in layers above the configuration and import it
    to type their factories, so the configuration names them here rather than importing
    them (importing the configuration loads neither); the registry stays the one list of
    names, and an entry it gains (``Registry.temporarily``) is accepted at once.
    """

    def names() -> Tuple[str, ...]:
        registry = getattr(importlib.import_module(module), attribute)
        return tuple(registry) + tuple(extra)  # a Registry iterates its names, a dict its keys

    names.__qualname__ = f"registry_names({module}.{attribute})"
    return names


def setting_of(f: dataclasses.Field) -> Setting:  # type: ignore[type-arg]
    """The declaration of a field (an empty one for a plain dataclass field)."""
    declaration: Setting = f.metadata.get(_KEY, Setting())
    return declaration


def _is_section(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


# -- declarations, flattened --------------------------------------------------------------------


@dataclass(frozen=True)
class Declared:
    """One setting with its dotted name, as the node, the docs and the tests see it.

    Attributes:
        name: dotted name (``detector.min_score``).
        default: the declared default.
        doc: its description.
        section_doc: first line of its section's docstring ("" at the top level).
        low, high: inclusive range (None: open).
        live: may change while running.
        setting: the declaration itself.
    """

    name: str
    default: Any
    doc: str
    section_doc: str
    low: Optional[float]
    high: Optional[float]
    live: bool
    setting: Setting

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def choices(self) -> Tuple[str, ...]:
        """Accepted values (empty: any); a registry's names are looked up now, not at declaration."""
        return self.setting.accepted()

    def check(self, value: Any) -> None:
        """``value`` against this setting's range and choices (:func:`check_value`)."""
        check_value(self.name, value, self.setting, self.default)


def _summary(cls: type) -> str:
    doc = cls.__dict__.get("__doc__") or ""
    if doc.startswith(f"{cls.__name__}("):  # the signature dataclasses writes when there is none
        return ""
    return (inspect.cleandoc(doc).splitlines() or [""])[0].rstrip(".")


def declared(cls: type, prefix: str = "") -> Tuple[Declared, ...]:
    """Every setting of ``cls`` and its sections, dotted, in declaration order."""
    defaults = cls()
    out: List[Declared] = []
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if _is_section(value):
            out.extend(declared(type(value), f"{prefix}{f.name}."))
            continue
        s = setting_of(f)
        low, high = _bounds(s, value)
        out.append(Declared(f"{prefix}{f.name}", value, s.doc, _summary(cls) if prefix else "", low, high, s.live, s))
    return tuple(out)


def flatten(obj: Any, prefix: str = "") -> Dict[str, Any]:
    """Dotted-name view of a settings instance (``{"detector.min_score": 0.5, ...}``)."""
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if _is_section(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


# -- coercion and merging ----------------------------------------------------------------------


def coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default``: an int is accepted for a float, a list for a
    tuple; nothing else is converted.

    Raises:
        ConfigError: naming the key, the value, its type and the expected type, with an example.
    """
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is tuple and isinstance(value, list):
        return tuple(value)
    if isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool):
        return value
    raise ConfigError(
        f"{name} = {value!r} has type {type(value).__name__}; expected {expected.__name__} "
        f"(for example {name}: {default!r})"
    )


def merge(base: T, updates: Mapping[str, Any], prefix: str = "") -> T:
    """``base`` with ``updates`` (nested mappings) applied: keys checked, values coerced.

    A section takes a mapping; a ``dict`` setting is updated key by key (free-form options).
    Ranges and choices are not checked here (:func:`check`).

    Raises:
        ConfigError: an unknown key (with the closest valid one), a section given a
            non-mapping, or a value of the wrong type.
    """
    known = [f.name for f in dataclasses.fields(base)]  # type: ignore[arg-type]
    changes: Dict[str, Any] = {}
    for key, value in updates.items():
        name = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(
                f"unknown key {name!r}; accepted here: {', '.join(prefix + k for k in known)}"
                f"{did_you_mean(key, known, prefix)}"
            )
        current = getattr(base, key)
        if _is_section(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name} must be a mapping of settings, got {value!r}")
            changes[key] = merge(current, value, f"{name}.")
        elif isinstance(current, dict):
            changes[key] = {**current, **coerce(name, value, current)}
        else:
            changes[key] = coerce(name, value, current)
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]


# -- checks ------------------------------------------------------------------------------------


def _bounds(s: Setting, default: Any) -> Tuple[Optional[float], Optional[float]]:
    """The range in the setting's own type (floats shown as floats, integers as integers)."""
    kind = float if isinstance(default, float) else int if isinstance(default, int) else None
    if kind is None or isinstance(default, bool):
        return s.low, s.high
    return (None if s.low is None else kind(s.low)), (None if s.high is None else kind(s.high))


def range_text(low: Optional[float], high: Optional[float]) -> str:
    if low is not None and high is not None:
        return f"a number in [{low}, {high}]"
    return f"a number >= {low}" if low is not None else f"a number <= {high}"


def check_value(name: str, value: Any, s: Setting, default: Any = None) -> None:
    """One value against its declared range and choices.

    Raises:
        ConfigError: ``{name} = {value} is out of range; expected a number in [low, high]``
            or ``... is not accepted; choose one of ...`` with the closest choice.
    """
    if s.low is not None or s.high is not None:
        low, high = _bounds(s, default if default is not None else value)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (low is not None and value < low)
            or (high is not None and value > high)
            or value != value  # NaN
        ):
            raise ConfigError(f"{name} = {value!r} is out of range; expected {range_text(low, high)}")
    if s.choices:
        choices = s.accepted()
        if value not in choices:
            raise ConfigError(
                f"{name} = {value!r} is not accepted; choose one of {', '.join(choices)}"
                f"{did_you_mean(value, choices)}"
            )


def check(obj: T, prefix: str = "") -> T:
    """Every declared range and choice of ``obj`` and its sections, then each class's
    ``cross_check()`` (rules between settings); returns ``obj``.

    Raises:
        ConfigError: the first value that is not accepted, named with its dotted key.
    """
    defaults = type(obj)()
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if _is_section(value):
            check(value, f"{prefix}{f.name}.")
        else:
            check_value(f"{prefix}{f.name}", value, setting_of(f), getattr(defaults, f.name))
    cross_check = getattr(obj, "cross_check", None)
    if cross_check is not None:
        cross_check()
    return obj


def parse_override(item: str) -> Tuple[str, Any]:
    """One ``--set KEY=VALUE`` argument -> ``(dotted key, value)``, the value read as YAML
    (``model.kind=none``, ``landmarks.enabled=false``, ``model.mean=[0.5]``).

    The one parser of command-line overrides: ``ros2-affect --set`` and ``training.train --set``.

    Raises:
        ConfigError: not ``KEY=VALUE``, or a value that is not valid YAML.
    """
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r} is not KEY=VALUE (e.g. --set model.kind=none)")
    try:
        return key.strip(), (yaml.safe_load(raw) if raw.strip() else "")
    except yaml.YAMLError:
        raise ConfigError(f"--set {item!r}: {raw!r} is not a valid value") from None
