"""A small generic registry: a decorator registers a factory under its function's name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from study.errors import ConfigError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """Name -> factory table for one kind of thing (models, datasets, ...).

    Args:
        kind: what is registered, used in error messages ("model", "dataset").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, fn: T | None = None, *, name: str | None = None):
        """Register `fn` under `name` (default: its function name); usable as a decorator."""

        def deco(f: T) -> T:
            key = name or f.__name__
            if key in self._entries:
                raise ConfigError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = f
            return f

        return deco(fn) if fn is not None else deco

    def get(self, name: str) -> T:
        """Return the factory registered as `name`.

        Raises:
            ConfigError: the name is unknown; the message lists the known names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
