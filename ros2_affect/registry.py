"""Name registries for detectors, trackers, backends and models.

Components register under a name at import time; afterwards the registry is read-only
(:meth:`Registry.freeze`), so a lookup never depends on import order at run time.

A name can also be *declared* (:meth:`Registry.declare`) for an entry that code above the
registry's layer provides later (:meth:`Registry.provide`, frozen or not): the torch
backend lives with the training code, which the runtime never imports, and training
provides it. A declared name is listed and accepted from the start; until it is provided,
looking it up says how to get it.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Generic, Iterator, Optional, Tuple, TypeVar

from ros2_affect.errors import UnknownNameError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to factories of one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, T] = {}
        self._declared: Dict[str, str] = {}  # name -> how to get it, for names provided later
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

    def declare(self, name: str, how_to_provide: str) -> None:
        """Reserve ``name`` for an entry that a higher layer provides with :meth:`provide`.

        ``how_to_provide`` completes the message of a lookup before that ("... is not
        loaded: <how_to_provide>").
        """
        if self._frozen:
            raise RuntimeError(f"the {self.kind} registry is read-only after import; cannot declare {name!r}")
        if name in self._entries or name in self._declared:
            raise RuntimeError(f"{self.kind} {name!r} is registered twice")
        self._declared[name] = how_to_provide

    def provide(self, name: str, obj: T) -> T:
        """Fill the declared ``name`` (allowed after :meth:`freeze`; providing the same object
        again is a no-op)."""
        if name not in self._declared:
            raise RuntimeError(
                f"{self.kind} {name!r} was not declared; only declared names can be provided after import"
            )
        current = self._entries.get(name)
        if current is not None and current is not obj:
            raise RuntimeError(f"{self.kind} {name!r} is already provided by {current!r}")
        self._entries[name] = obj
        return obj

    def missing(self, name: str) -> Optional[str]:
        """How to provide ``name`` when it is declared but not provided yet, else None."""
        if name in self._declared and name not in self._entries:
            return self._declared[name]
        return None

    @contextlib.contextmanager
    def temporarily(self, name: str, obj: T) -> Iterator[T]:
        """Register ``obj`` under ``name`` for the ``with`` block only, frozen or not.

        For tests and one-off trials: the entry is gone again afterwards, so the
        registry seen by the rest of the process does not change.
        """
        if name in self._entries or name in self._declared:
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
                registered names and the closest match. For a declared name not provided
                yet, it says how to provide it.
        """
        try:
            return self._entries[name]
        except KeyError:
            how = self.missing(name)
            if how is not None:
                raise UnknownNameError(f"{self.kind} {name!r} is not loaded: {how}") from None
            names = self.names()
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; available: {', '.join(names) or '(none)'}{did_you_mean(name, names)}"
            ) from None

    def names(self) -> Tuple[str, ...]:
        """The registered and the declared names, sorted."""
        return tuple(sorted(set(self._entries) | set(self._declared)))

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._declared

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
