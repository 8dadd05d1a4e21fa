"""Split-conformal prediction sets (LAC: least ambiguous set-valued classifiers, Sadinle et al.
2019): a threshold calibrated on held-out posts so that, for a new post exchangeable with them,
the set of labels with probability >= 1 - q holds the true label with probability at least the
asked coverage.

Why these few lines and not MAPIE: sgmft predicts from frozen features with a model that is
neither a scikit-learn estimator nor refitted by the calibrating library; the calibration
posts are the run's out-of-fold validation predictions, made before the final model exists.
What is needed is the conformal quantile of their scores, which is this module. LAC gives the
smallest sets on average; its sets can be empty when no label is likely enough, and sgmft then
answers with its decision (coverage can only grow).
"""

from __future__ import annotations

import math

import numpy as np

#: the one reason a run gives no prediction sets, wherever it is said
NO_SETS = ("this run held no posts out of training to calibrate prediction sets on (a tenth of the training "
           "posts is held out when it holds 200 posts or more: train.calibration, "
           "train.calibration_min_posts), so a set is every label")


def lac_threshold(probs: np.ndarray, labels: np.ndarray, coverage: float) -> float:
    """q such that {c : p_c >= 1 - q} covers the true label with probability >= ``coverage``:
    the ceil((n + 1) coverage) / n empirical quantile of the scores 1 - p_true (1.0, every
    label, when n is too small for the asked coverage)."""
    return threshold_from_scores(1.0 - probs[np.arange(len(labels)), labels], coverage)


def threshold_from_scores(scores: list[float] | np.ndarray, coverage: float) -> float:
    """`lac_threshold` from the calibration posts' scores (1 - p_true) alone: the k-th smallest
    score, k = ceil((n + 1) coverage); 1.0 (every label) when k > n."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage {coverage}; expected a value in (0, 1)")
    scores = np.sort(np.asarray(scores, np.float64))
    k = math.ceil((len(scores) + 1) * coverage)
    return 1.0 if k > len(scores) else float(scores[k - 1])


def prediction_sets(probs: np.ndarray, threshold: float, decided: np.ndarray | None = None) -> np.ndarray:
    """(N, C) boolean: label c is in post i's set when p_ic >= 1 - threshold, and the decided
    label ``decided`` (N,) (default the most probable) always is: one answer, inside its set.
    Adding a label to a set can only raise its coverage."""
    sets = probs >= 1.0 - threshold - 1e-12
    sets[np.arange(len(probs)), probs.argmax(1) if decided is None else decided] = True
    return sets


def mondrian_thresholds(scores: np.ndarray, groups: list, coverage: float) -> dict:
    """Group-conditional (Mondrian) thresholds: `threshold_from_scores` over each group's
    calibration scores alone (1.0, every label, for a group with too few for the coverage).
    Within each group the guarantee holds for posts exchangeable with that group's."""
    members: dict = {}
    for score, group in zip(scores, groups, strict=True):
        members.setdefault(group, []).append(score)
    return {group: threshold_from_scores(values, coverage) for group, values in members.items()}


def class_conditional_sets(probs: np.ndarray, thresholds: np.ndarray, decided: np.ndarray | None = None
                           ) -> np.ndarray:
    """(N, C) boolean: label c is in the set when p_c >= 1 - q_c, q_c calibrated on the posts of
    class c alone (Mondrian by label: coverage holds within every class); the decision always."""
    sets = probs >= 1.0 - thresholds[None, :] - 1e-12
    sets[np.arange(len(probs)), probs.argmax(1) if decided is None else decided] = True
    return sets


def set_coverage(sets: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Empirical coverage and mean set size of prediction sets on labelled posts."""
    return {"coverage": float(sets[np.arange(len(labels)), labels].mean()),
            "mean_size": float(sets.sum(1).mean())}


def weighted_thresholds(scores: np.ndarray, weights: np.ndarray, test_weights: np.ndarray,
                        coverage: float) -> np.ndarray:
    """Weighted split-conformal thresholds under a covariate shift (Tibshirani, Barber, Candès
    and Ramdas 2019): for each test post j, the ``coverage`` quantile of the distribution that puts
    mass w_i / (W + w_j) on calibration score s_i and w_j / (W + w_j) on +infinity, W = sum w_i.
    scores (n,), weights (n,) the calibration posts' density ratios, test_weights (m,). A test post
    whose quantile falls on +infinity (its weight leaves the calibration posts too little mass)
    gets 1.0: every label. With equal weights this is `threshold_from_scores`."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage {coverage}; expected a value in (0, 1)")
    order = np.argsort(scores, kind="stable")
    sorted_scores = np.asarray(scores, np.float64)[order]
    cumulative = np.cumsum(np.asarray(weights, np.float64)[order])
    total = cumulative[-1] if len(cumulative) else 0.0
    need = coverage * (total + np.asarray(test_weights, np.float64))
    at = np.searchsorted(cumulative, need * (1 - 1e-12), side="left")
    out = np.ones(len(need))
    inside = at < len(sorted_scores)
    out[inside] = sorted_scores[at[inside]]
    return out


def sets_of_thresholds(probs: np.ndarray, thresholds: np.ndarray,
                       decided: np.ndarray | None = None) -> np.ndarray:
    """(N, C) boolean prediction sets with a threshold per post (N,): p_ic >= 1 - q_i, the decided
    label always inside."""
    sets = probs >= 1.0 - np.asarray(thresholds)[:, None] - 1e-12
    sets[np.arange(len(probs)), probs.argmax(1) if decided is None else decided] = True
    return sets
