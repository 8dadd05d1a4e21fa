"""Intervals that hold for new groups: each estimator's interval widened by a margin calibrated on
the run's held-out units.

The estimators' intervals (`sgmft.quantify.estimators`) speak for the noise of a group's own
posts and of the held-out posts that measured the error rates; they take those rates to hold for
the group. A group from an event, user or week the model never saw may be answered worse: under
the artificial-prevalence protocol on me16-dev with an event held out, the 95 % intervals held
the true share of 7-84 % of groups (results/2026-12-07-quantify/).

`unit_scores` treats each held-out unit of the run (`Rates.units`: the events, users or image
groups its validation held out) as such a new group: its shares are estimated by the method with
the error rates of the *other* units, and its score is how far its true shares fall outside that
interval (over labels, the largest of max(low - share, share - high, 0): the conformity score of
conformalised quantile regression; Romano, Patterson and Candes 2019). The margin (`margin`) is
the ceil((U + 1) 0.95)-th smallest of the U scores: a new group exchangeable with the held-out
units lies within intervals widened by it on both sides (`widen`) with probability at least
0.95 (split conformal). With fewer than `MIN_UNITS` units no margin can be earned at 95 %: then a
batch told apart from the training posts gets every interval [0, 1], and one that is not keeps
the rates' intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sgmft.quantify.estimators import Estimate, estimate
from sgmft.quantify.rates import Rates

#: the level of the margin, and the fewest units that can earn one: ceil((U + 1) LEVEL) <= U
LEVEL = 0.95
MIN_UNITS = 19
#: held-out units scored at most (drawn at random beyond it): the margin's quantile needs no more
MAX_UNITS = 500


@dataclass(frozen=True)
class Margin:
    """value: what every interval is widened by on each side (1.0: every interval is [0, 1]);
    units: the held-out units that measured it; how: in words."""

    value: float
    units: int
    how: str

    def record(self) -> dict[str, object]:
        return {"margin": round(self.value, 4), "units": self.units, "how": self.how}


def unit_scores(rates: Rates, method: str, limit: int = MAX_UNITS, seed: int = 0) -> np.ndarray:
    """(U,) for each held-out unit (at most ``limit``, drawn with ``seed``), how far its true
    shares fall outside the 95 % interval that ``method`` gives it with the error rates of the
    other units (0 when inside)."""
    if rates.units is None:
        raise ValueError("the rates carry no held-out units")
    names = np.unique(rates.units)
    if len(names) > limit:
        names = np.sort(np.random.default_rng(seed).choice(names, limit, replace=False))
    scores = np.zeros(len(names))
    for j, name in enumerate(names):
        rows = rates.units == name
        found = estimate(method, rates.probs[rows], np.zeros(1, np.int64), rates.without(rows))
        truth = np.bincount(rates.labels[rows], minlength=rates.k) / rows.sum()
        scores[j] = max(0.0, float(np.max(np.maximum(found.low[0] - truth, truth - found.high[0]))))
    return scores


def conformal_quantile(scores: np.ndarray, level: float = LEVEL) -> float:
    """The ceil((U + 1) level)-th smallest of U scores; inf when U is too small for ``level``."""
    rank = math.ceil((len(scores) + 1) * level)
    return float(np.sort(scores)[rank - 1]) if rank <= len(scores) else math.inf


def margin(rates: Rates | None, method: str, shifted: bool) -> Margin:
    """The margin of ``method``'s intervals for a batch (``shifted``: the drift report tells it
    from the training posts), from the run's held-out units (see the module docstring)."""
    units = 0 if rates is None or rates.units is None else int(np.unique(rates.units).size)
    if units < MIN_UNITS:
        why = (f"the run holds {units} held-out group(s) (events, users or image groups), fewer than the "
               f"{MIN_UNITS} a 95 % bound on a new group's error needs" if units
               else "the run keeps no held-out groups to measure a new group's error on (no held-out posts, "
                    "or trained by an older sgmft)")
        if shifted:
            return Margin(1.0, units, f"every interval is [0, 1]: these posts are unlike the training posts, "
                                      f"and {why}; label some of them, or train on more groups")
        return Margin(0.0, units, f"intervals as the error rates give them (no shift detected; {why})")
    value = min(1.0, conformal_quantile(unit_scores(rates, method)))
    return Margin(value, units, (
        f"every interval widened by {value:.3f} on each side: the amount by which the true shares of "
        f"{LEVEL:.0%} of the run's {units} held-out groups, each estimated with the error rates of the "
        "others, fell outside their intervals (split conformal over groups)"
        + ("; these posts are unlike the training posts, so even this may not hold" if shifted else "")))


def widen(found: Estimate, by: float) -> Estimate:
    """``found`` with every interval widened by ``by`` on each side (within [0, 1])."""
    if by <= 0:
        return found
    return Estimate(found.shares, np.clip(found.low - by, 0.0, 1.0), np.clip(found.high + by, 0.0, 1.0),
                    found.method)
