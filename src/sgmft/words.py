"""Counts in words: ``plural(3, "post")`` is ``3 posts``, ``plural(1, "post")`` is ``1 post``."""

from __future__ import annotations


def noun(count: float, singular: str, many: str | None = None) -> str:
    """``singular`` for a count of one, else its plural: ``many``, else ``singular + "s"`` (a noun
    already ending in s, such as a unit given as ``posts``, is kept as it is)."""
    if count == 1:
        return singular
    return many or (singular if singular.endswith("s") else singular + "s")


def plural(count: float, singular: str, many: str | None = None) -> str:
    """The count and its noun: ``1 post``, ``0 posts``, ``1,200 invalid rows``."""
    return f"{count:,} {noun(count, singular, many)}"
