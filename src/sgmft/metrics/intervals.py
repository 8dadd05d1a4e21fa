"""Confidence intervals for a proportion measured on a few posts."""

from __future__ import annotations

import math

#: a part (validation or test) with fewer posts, or fewer posts of some label, is too small for
#: its scores to mean much: runs and evaluations say so, with the Wilson interval
SMALL_PART, SMALL_PER_LABEL = 30, 5


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default); (0, 1) without posts."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
