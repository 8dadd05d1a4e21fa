"""Confidence intervals for a proportion measured on a few posts."""

from __future__ import annotations

import numpy as np

#: a part (validation or test) with fewer posts, or fewer posts of some label, is too small for
#: its scores to mean much: runs and evaluations say so, with the Wilson interval
SMALL_PART, SMALL_PER_LABEL = 30, 5


def wilson(successes, n, z: float = 1.959964):
    """The Wilson score interval of a proportion (95 % by default); (0, 1) without posts.
    Scalars give floats; arrays of counts (any shape, broadcast) give arrays of bounds."""
    successes, n = np.asarray(successes, np.float64), np.asarray(n, np.float64)
    safe = np.maximum(n, 1.0)
    p = successes / safe
    centre = (p + z * z / (2 * safe)) / (1 + z * z / safe)
    half = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe)) / (1 + z * z / safe)
    low = np.where(n > 0, np.maximum(0.0, centre - half), 0.0)
    high = np.where(n > 0, np.minimum(1.0, centre + half), 1.0)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high
