"""The fallback mixture (beyond the paper), chosen on out-of-fold predictions: the weights of
the fused head, the text probe, the image probe and the class prior that hold on every fold
(`choose_mixture`). The model carries the weights (`sgmft.models.fallback.UnimodalProbes`)."""

from __future__ import annotations

import itertools

import numpy as np

from sgmft.decision.temperature import counted_folds
from sgmft.metrics.calibration import log_loss
from sgmft.models.fallback import COMPONENTS


def simplex_grid(step: float = 0.1, parts: int = len(COMPONENTS)) -> list[tuple[float, ...]]:
    """Every weight vector >= 0 summing to 1 on a grid of ``step``, in descending lexicographic
    order (all on the first part first)."""
    n = round(1 / step)
    points = sorted((c for c in itertools.product(range(n + 1), repeat=parts) if sum(c) == n), reverse=True)
    return [tuple(v / n for v in point) for point in points]


def _fold_scores(probs: np.ndarray, labels: np.ndarray, fold: np.ndarray) -> list[dict[str, float]]:
    """Per fold: its posts, log-loss and accuracy."""
    scores = []
    for k in sorted(set(fold.tolist())):
        inside = fold == k
        scores.append({"fold": int(k), "n": int(inside.sum()),
                       "log_loss": log_loss(probs[inside], labels[inside]),
                       "accuracy": float((probs[inside].argmax(1) == labels[inside]).mean())})
    return scores


def choose_mixture(components: np.ndarray, labels: np.ndarray, fold: np.ndarray,
                   step: float = 0.1) -> tuple[tuple[float, ...], dict]:
    """The mixture weights that hold on every fold: the lowest worst-fold log-loss, then the
    lowest mean fold log-loss, then the most weight on the fused head (the grid's order).

    components: (4, N, C) out-of-fold probabilities of the fused head, the text probe, the
    image probe and the class prior; labels (N,); fold (N,) each post's validation fold.

    Log-loss, not accuracy: accuracy moves by whole posts, and a component that is confidently
    wrong on new groups (the image of an unseen event) can win a post by chance while its
    log-loss shows it failing. The worst fold, not the pooled posts: a fold is a set of groups
    the model never saw, as the test is; a mixture that is good on average but fails one such
    set (the image on an event unlike the others) is what hurts users, and the prior is there
    for when no part holds. Only the folds large enough to say something count for the worst
    (`sgmft.decision.temperature.counted_folds`); the mean is over every fold.

    Returns the weights and a record: the chosen mixture's and each component's per-fold
    scores, pooled accuracy and log-loss.
    """
    best, best_key = None, None
    parts = counted_folds(fold)
    for weights in simplex_grid(step, len(components)):
        mixed = np.tensordot(np.asarray(weights), components, axes=1)
        per_fold = [s["log_loss"] for s in _fold_scores(mixed, labels, fold)]
        worst = max(log_loss(mixed[part], labels[part]) for part in parts)
        key = (round(worst, 9), round(float(np.mean(per_fold)), 9))
        if best_key is None or key < best_key:
            best, best_key = weights, key
    mixed = np.tensordot(np.asarray(best), components, axes=1)
    record = {"weights": dict(zip(COMPONENTS, best, strict=True)),
              "worst_fold_log_loss": best_key[0], "mean_fold_log_loss": best_key[1],
              "accuracy": float((mixed.argmax(1) == labels).mean()), "log_loss": log_loss(mixed, labels),
              "per_fold": _fold_scores(mixed, labels, fold),
              "components": {name: {"accuracy": float((p.argmax(1) == labels).mean()),
                                    "log_loss": log_loss(p, labels),
                                    "per_fold": _fold_scores(p, labels, fold)}
                             for name, p in zip(COMPONENTS, components, strict=True)}}
    return best, record
