"""How far predicted probabilities can be trusted: log-loss, Brier score, expected calibration
error (ECE) with the floor a perfectly calibrated model of the same size shows, reliability
bins, and temperature scaling.

All take probabilities (N, C) and integer labels (N,). ECE is top-label, over equal-width
confidence bins (15 by default): sum over bins of (share of posts) x |accuracy - mean confidence|.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

#: confidence bins of the ECE and the reliability diagram
BINS = 15
#: the smallest probability a log-loss counts (a confident miss costs about 27.6 nats)
EPSILON = 1e-12


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits (log-probabilities pass unchanged)."""
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class (nats)."""
    if not len(labels):
        return float("nan")
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], EPSILON, 1.0)).mean())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over posts of sum over classes of (p - 1[true])^2 (0 to 2)."""
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(1).mean())


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict[str, float]]:
    """Per equal-width bin of the top-label confidence: its range, posts, mean confidence and
    accuracy (bins without posts are left out)."""
    confidence, right = probs.max(1), probs.argmax(1) == labels
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            rows.append({"low": b / bins, "high": (b + 1) / bins, "n": int(inside.sum()),
                         "confidence": float(confidence[inside].mean()),
                         "accuracy": float(right[inside].mean())})
    return rows


def _ece(confidence: np.ndarray, right: np.ndarray, bins: int) -> float:
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    total = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, right, bins) - np.bincount(index, confidence, bins))
    return float(gap.sum() / max(total.sum(), 1))


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Top-label expected calibration error over ``bins`` equal-width bins."""
    return _ece(probs.max(1), (probs.argmax(1) == labels).astype(float), bins)


def ece_floor(confidence: np.ndarray, bins: int = BINS, draws: int = 2000, seed: int = 0) -> dict[str, float]:
    """The ECE of a perfectly calibrated model with these top-label confidences, by simulation:
    each post is right with probability equal to its confidence; ``draws`` such test sets give
    the mean and the 95th percentile. An ECE below that percentile is indistinguishable from
    sampling noise at this test size."""
    rng = np.random.default_rng(seed)
    values = [_ece(confidence, (rng.random(len(confidence)) < confidence).astype(float), bins)
              for _ in range(draws)]
    return {"mean": float(np.mean(values)), "p95": float(np.percentile(values, 95))}


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
