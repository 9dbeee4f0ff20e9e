"""Small name -> implementation registries.

A spec string ("fedavg", "dirichlet", "cnn") maps to an implementation through
one of these, never through an if/elif chain: adding an entry is one decorator,
and the spec validator and the error messages learn the new name for free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fedsecure.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered mapping from names to implementations of one interface.

    Args:
        kind: what the entries are ("strategy", "model", ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name`` and returns it unchanged."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The implementation registered as ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists the known names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def name_of(self, obj: T) -> str:
        """The name ``obj`` is registered under.

        Raises:
            UnknownNameError: ``obj`` is not registered.
        """
        for name, entry in self._entries.items():
            if entry is obj:
                return name
        raise UnknownNameError(f"{obj!r} is not a registered {self.kind}")

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
