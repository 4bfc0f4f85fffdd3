"""A generic name -> object registry, one per grid axis (archs, datasets, algorithms, profiles)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bench.errors import BenchError

T = TypeVar("T")


class RegistryError(BenchError, KeyError):
    """Raised for an unknown name; its message is one line naming the value and the accepted ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects (usually factories) for one axis of the grid.

    Use ``@REG.register("name")`` on a function or class, then ``REG.get("name")``.
    """

    def __init__(self, axis: str) -> None:
        self.axis = axis
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name is a programming error."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"duplicate {self.axis} {name!r}")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the entry for ``name`` or raise a one-line error listing the accepted names."""
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(f"unknown {self.axis} {name!r}; accepted: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
