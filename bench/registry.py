"""A generic name -> object registry, one per grid axis (archs, datasets, algorithms, observers).

An entry carries its metadata (timm's ``register_model`` style): a display ``label`` and a table ``order`` used by
``bench list``, the records and so the aggregator's tables, plus free keys (an algorithm's ``kind``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bench.errors import BenchError

T = TypeVar("T")


class RegistryError(BenchError, KeyError):
    """Raised for an unknown name; its message is one line naming the value and the accepted ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    """An entry's metadata: display ``label`` (default: the name), table ``order`` (lower first; default: after every
    entry given one, in registration order) and free keys ``meta``."""

    name: str
    label: str
    order: int
    meta: dict[str, Any] = field(default_factory=dict)


UNORDERED = 1000  # order of entries registered without one: after the ordered ones


class Registry(Generic[T]):
    """Maps names to objects (usually factories) for one axis of the grid.

    Use ``@REG.register("name")`` on a function or class, then ``REG.get("name")``.
    """

    def __init__(self, axis: str) -> None:
        self.axis = axis
        self._items: dict[str, T] = {}
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, label: str | None = None, order: int | None = None,
                 **meta: Any) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` with its metadata; a duplicate name is a programming error."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"duplicate {self.axis} {name!r}")
            self._items[name] = obj
            rank = UNORDERED + len(self._entries) if order is None else int(order)
            self._entries[name] = Entry(name, label or name, rank, dict(meta))
            return obj

        return deco

    def entry(self, name: str) -> Entry:
        """The metadata of ``name`` (one-line error for an unknown name, as :meth:`get`)."""
        self.get(name)
        return self._entries[name]

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
