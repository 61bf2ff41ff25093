"""Named implementations of one extension point (poolings, post steps, methods...), filled by decorators.

The module that implements an extension point owns its registry; the recipe schema checks choices
against it, and tests loop over it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """A name -> implementation mapping with a decorator to fill it.

    >>> SHAPES = Registry("shape")
    >>> @SHAPES.register("square")
    ... def square(x):
    ...     return x * x
    >>> SHAPES["square"](3), list(SHAPES)
    (9, ['square'])
    """

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def add(self, name: str, value: T) -> T:
        if name in self:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self[name] = value
        return value

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated function or class as ``name``."""
        return lambda value: self.add(name, value)
