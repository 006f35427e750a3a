"""A small name → builder registry used for models, losses, data formats and built-in data sets."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from medseg.core.errors import MedsegError

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Maps names to builders, with metadata, and fails helpfully on unknown names.

    Args:
        kind: what is registered ("model", "loss", ...), used in error messages.
        error: the ``MedsegError`` subclass raised for unknown names.
        loader: called once, on the first lookup, to import the modules that register the
            builders (so importing the registry stays cheap: a command that needs no model
            never imports the model libraries).

    Example:
        >>> MODELS = Registry("model")
        >>> @MODELS.register("unet", dims=(2, 3))
        ... def unet(**kw): ...
        >>> MODELS.get("unet")
    """

    def __init__(self, kind: str, error: type[MedsegError] = MedsegError, loader: Callable[[], None] | None = None):
        self.kind = kind
        self.error = error
        self._loader = loader
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._aliases: dict[str, str] = {}

    def _load(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None  # cleared first: a module it imports may look names up
            loader()

    def alias(self, alias: str, name: str) -> None:
        """Accept ``alias`` wherever ``name`` is asked for (another spelling users meet in docs and tutorials)."""
        self._aliases[alias] = name

    def canonical(self, name: str) -> str | None:
        """The registered name meant by ``name``: itself, an alias, or the same name with ``_`` and ``-`` swapped."""
        self._load()
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        folded = name.replace("_", "-").lower()
        for known in list(self._items) + list(self._aliases):
            if known.replace("_", "-").lower() == folded:
                return self._aliases.get(known, known)
        return None

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        def deco(fn: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            self._meta[name] = dict(meta)
            return fn

        return deco

    def get(self, name: str) -> T:
        known = self.canonical(name) if isinstance(name, str) else None
        if known is not None:
            return self._items[known]
        self._load()
        if name not in self._items:
            close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else f"choose one of: {', '.join(sorted(self._items))}"
            raise self.error(f"unknown {self.kind} {name!r}", fix=hint)
        return self._items[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta[self.canonical(name) or name])

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._items)
