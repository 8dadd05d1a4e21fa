"""Registries of fusion modules and heads (as timm's ``@register_model``): every ablation and
compared method is a configuration value, not a copied training script."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FUSIONS: dict[str, Callable[..., Any]] = {}
HEADS: dict[str, Callable[..., Any]] = {}


def _register(table: dict[str, Callable[..., Any]], kind: str, name: str):
    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in table:
            raise ValueError(f"{kind} {name!r} is registered twice")
        table[name] = factory
        return factory

    return decorate


def register_fusion(name: str):
    """Decorator: a fusion module class, built as ``cls(width, length, config)``."""
    return _register(FUSIONS, "fusion", name)


def register_head(name: str):
    """Decorator: a head class, built as ``cls(fused_dim, stream_dim, num_classes, config)``."""
    return _register(HEADS, "head", name)


def lookup(table: dict[str, Callable[..., Any]], kind: str, name: str) -> Callable[..., Any]:
    if name not in table:
        raise KeyError(f"unknown {kind} {name!r}; available: {', '.join(sorted(table))}")
    return table[name]
