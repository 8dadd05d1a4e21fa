"""The calibration temperature, chosen on out-of-fold predictions: the one that holds on every
fold large enough to say something (`fit_temperature`), and the rule of ``model.calibration``
(`choose_temperature`). The model carries T (a buffer); its output logits are divided by it."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from sgmft.data.folds import Folds
from sgmft.metrics.calibration import log_loss, softmax

#: a fold counts for a worst-fold rule when it holds `MIN_FOLD_POSTS` posts, or, on data so
#: small that no fold does, `MIN_FOLD_SHARE` of the largest fold's: one confident miss in a
#: 5-post fold would otherwise decide for the 800 posts of the others
MIN_FOLD_SHARE, MIN_FOLD_POSTS = 0.25, 30


def counted_folds(groups: np.ndarray) -> list[np.ndarray]:
    """Boolean masks (N,) of the folds a worst-fold rule weighs: those of at least
    min(`MIN_FOLD_POSTS`, `MIN_FOLD_SHARE` of the largest fold) posts; the smaller ones
    together as one part when they reach that size (else they count in the mean only)."""
    values, sizes = np.unique(groups, return_counts=True)
    floor = min(MIN_FOLD_POSTS, MIN_FOLD_SHARE * sizes.max())
    large = values[sizes >= floor]
    parts = [groups == g for g in large]
    small = ~np.isin(groups, large)
    return parts + ([small] if small.sum() >= floor else [])


def fit_temperature(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None,
                    lowest: float = 0.05) -> float:
    """The temperature T in [``lowest``, 20] minimising the log-loss of softmax(logits / T)
    (logits or log-probabilities, (N, C)); with ``groups`` (N,), the log-loss of the worst group
    (the temperature that holds on every validation fold) among the folds large enough to say
    something (`counted_folds`). 1.0 without posts. T > 1 softens
    overconfident predictions, T < 1 sharpens underconfident ones (``lowest`` = 1 forbids it);
    the argmax never changes."""
    if not len(labels):
        return 1.0
    logits = np.asarray(logits, np.float64)
    parts = [np.ones(len(labels), bool)] if groups is None else counted_folds(np.asarray(groups))

    def loss(log_t: float) -> float:
        probs = softmax(logits / np.exp(log_t))
        return max(log_loss(probs[part], labels[part]) for part in parts)

    found = minimize_scalar(loss, bounds=(np.log(lowest), np.log(20.0)), method="bounded",
                            options={"xatol": 1e-4})
    # the bounded search stops near, never on, a bound: the bound itself when it is as good
    return lowest if loss(np.log(lowest)) <= found.fun else float(np.exp(found.x))


def choose_temperature(mode: str, folds: Folds, log_probs: np.ndarray, labels: np.ndarray,
                       fold: np.ndarray, errors: int) -> tuple[float, str]:
    """The temperature for ``model.calibration`` and the rule that gave it, in words: the one
    that holds on every fold, as the mixture. Without out-of-fold errors sharper is always
    better, so it cannot be estimated (1). Under ``auto``, folds that could not hold out the
    data's groups (images stood in) resemble training more than a test on new groups will: a
    temperature that sharpens there makes confident mistakes on the new groups, so T >= 1."""
    if mode == "off":
        return 1.0, "off (model.calibration = off)"
    if not errors:
        return 1.0, "not fitted: no out-of-fold error to fit it on"
    if mode == "auto" and not folds.shift_like:
        return (fit_temperature(log_probs, labels, fold, lowest=1.0),
                "fitted on the worst fold, softening only: the folds could not hold out the data's groups")
    return fit_temperature(log_probs, labels, fold), "fitted on the worst fold"
