"""Name registries for detectors, trackers, backends and models.

Components register under a name at import time; afterwards the registry is read-only
(:meth:`Registry.freeze`), so a lookup never depends on import order at run time.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Generic, Iterator, Tuple, TypeVar

from ros2_affect.errors import UnknownNameError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to factories of one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, T] = {}
        self._frozen = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``."""

        def add(obj: T) -> T:
            if self._frozen:
                raise RuntimeError(f"the {self.kind} registry is read-only after import; cannot add {name!r}")
            if name in self._entries:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def freeze(self) -> None:
        self._frozen = True

    @contextlib.contextmanager
    def temporarily(self, name: str, obj: T) -> Iterator[T]:
        """Register ``obj`` under ``name`` for the ``with`` block only, frozen or not.

        For tests and one-off trials: the entry is gone again afterwards, so the
        registry seen by the rest of the process does not change.
        """
        if name in self._entries:
            raise RuntimeError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        try:
            yield obj
        finally:
            del self._entries[name]

    def get(self, name: str) -> T:
        """Return the entry for ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists the
                registered names and the closest match.
        """
        try:
            return self._entries[name]
        except KeyError:
            names = sorted(self._entries)
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; available: {', '.join(names) or '(none)'}{did_you_mean(name, names)}"
            ) from None

    def names(self) -> Tuple[str, ...]:
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
