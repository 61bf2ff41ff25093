"""Recipe options with their valid range, declared beside their default and checked before any work.

A number in a recipe schema is declared with :func:`option`, which records its bounds in the
dataclass field; :func:`check_ranges` walks a schema and a loaded recipe and rejects any value
outside its bounds with a message that names the key, the bounds and the default. ``null`` passes
where the field allows it (``int | None``).

>>> from dataclasses import dataclass
>>> @dataclass
... class Example:
...     batch_size: int = option(32, ge=1)
>>> bounds(Example, "batch_size")
'>= 1'
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any

from core.base.errors import RecipeError

_RANGE = "range"
_SIGNS = (("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
          ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b))


def option(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, ge: float | None = None,
           gt: float | None = None, le: float | None = None, lt: float | None = None) -> Any:
    """A dataclass field with ``default`` (or ``factory``) whose value must satisfy the given bounds."""
    limits = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={_RANGE: limits})
    return dataclasses.field(default=default, metadata={_RANGE: limits})


def _describe(limits: dict) -> str:
    return " and ".join(f"{sign} {limits[key]}" for key, sign, _ in _SIGNS if key in limits)


def bounds(schema: type, name: str) -> str | None:
    """The bounds of field ``name`` of ``schema`` in words (None: the field declares none)."""
    field = next(f for f in dataclasses.fields(schema) if f.name == name)
    return _describe(field.metadata[_RANGE]) if _RANGE in field.metadata else None


def numeric_fields(schema: type, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """Every int or float field of ``schema`` and of the dataclasses inside it, by dotted key."""
    out = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        if typing.get_origin(hint) is list:
            item = typing.get_args(hint)[0]
            if dataclasses.is_dataclass(item):
                out += numeric_fields(item, f"{prefix}{f.name}[].")
            continue
        inner = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        if dataclasses.is_dataclass(inner[0]):
            out += numeric_fields(inner[0], f"{prefix}{f.name}.")
        elif inner[0] in (int, float) and len(inner) == 1:
            out.append((f"{prefix}{f.name}", f))
    return out


def _values(cfg: Any, key: str) -> list[Any]:
    """The values at dotted ``key`` of ``cfg``; ``a[].b`` reaches ``b`` of every item of list ``a``."""
    head, _, rest = key.partition(".")
    if head.endswith("[]"):
        return [v for item in (cfg.get(head[:-2]) or []) for v in _values(item, rest)]
    value = cfg.get(head) if hasattr(cfg, "get") else None
    return _values(value, rest) if rest else [value]


def check_ranges(cfg: Any, schema: type) -> None:
    """Raise a RecipeError for the first number of ``cfg`` outside the bounds ``schema`` declares."""
    for key, field in numeric_fields(schema):
        limits = field.metadata.get(_RANGE)
        if not limits:
            continue
        for value in _values(cfg, key):
            if value is None or isinstance(value, bool) or not isinstance(value, int | float):
                continue  # null where allowed; a wrong type is OmegaConf's to report
            if not all(test(value, limits[name]) for name, _, test in _SIGNS if name in limits):
                default = field.default if field.default is not dataclasses.MISSING else None
                example = f", e.g. {key.replace('[]', '[0]')}={default}" if default is not None else ""
                raise RecipeError(f"{key.replace('[]', '[i]')}={value} is out of range: it must be "
                                  f"{_describe(limits)}{' (or null)' if _nullable(field) else ''}{example}")


def _nullable(field: dataclasses.Field) -> bool:
    return field.default is None


def check_sections(cfg: Any, schema: type, prefix: str = "") -> None:
    """Run the ``check(section, key)`` static method of every options class of ``schema`` that has one,
    on its section of ``cfg`` (nested sections included): each class checks what its ranges cannot say
    (choices among a registry, values that must agree), beside the code it configures."""
    for f in dataclasses.fields(schema):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if not dataclasses.is_dataclass(default):
            continue
        section = cfg.get(f.name) if hasattr(cfg, "get") else None
        if section is None:
            continue
        check_sections(section, type(default), f"{prefix}{f.name}.")
        if hasattr(type(default), "check"):
            type(default).check(section, f"{prefix}{f.name}")


def check_choices(section: Any, choices: tuple[tuple[str, Iterable[str]], ...], prefix: str = "") -> None:
    """Raise a RecipeError naming the key (``prefix.key``) and the valid values for any value outside them.

    The valid values are the registries of the implementations (``core.model.backbone.POOLINGS``...), so
    a registered pooling, resize policy, tuning mode or post step is a valid recipe value at once.
    """
    for key, allowed in choices:
        value = section.get(key) if "." not in key else _values(section, key)[0]
        if value not in allowed:
            raise RecipeError(f"{prefix + '.' if prefix else ''}{key}={value!r} is not one of {', '.join(allowed)}")


def check_auto_or_number(key: str, value: object, low: float, high: float, expected: str) -> None:
    """A RecipeError unless ``value`` is "auto" or a number in [low, high]; ``expected`` describes one."""
    if str(value) == "auto":
        return
    try:
        if low <= float(value) <= high:
            return
    except ValueError:
        pass
    raise RecipeError(f"{key}={value!r} must be auto or {expected}")
