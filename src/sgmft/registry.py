"""One small name -> factory registry (as timm's ``@register_model``), used for encoders, fusion
modules and heads, so that every choice is a configuration value."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class Registry:
    """Factories by name, for one kind of thing ("encoder", "fusion", "head")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: make ``factory`` available under ``name``."""

        def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def get(self, name: str) -> Callable[..., Any]:
        """The factory of ``name``; KeyError listing what is available otherwise."""
        if name not in self._factories:
            raise KeyError(f"unknown {self.kind} {name!r}; available: {', '.join(self)}")
        return self._factories[name]

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._factories))
