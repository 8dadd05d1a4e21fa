"""Balanced decisions, chosen on out-of-fold predictions: per-label offsets added to the
log-probabilities before the argmax (the model's ``decision_bias``)."""

from __future__ import annotations

import numpy as np

from sgmft.decision.earned import Earned, Units, judge, statistic_interval
from sgmft.metrics.classification import macro_f1

#: the offsets tried per label (log-probability units) and the accuracy a balanced decision may give up
OFFSETS = np.round(np.arange(0.0, 2.01, 0.1), 2)
ACCURACY_TOLERANCE = 0.005


def balanced_offsets(probs: np.ndarray, labels: np.ndarray,
                     rounds: int = 3) -> tuple[np.ndarray, dict[str, float]]:
    """Per-label offsets b (C,) for the decision argmax(log p + b) that maximise macro-F1 on these
    (held-out) posts while their accuracy stays within `ACCURACY_TOLERANCE` of the plain argmax's:
    coordinate ascent over `OFFSETS`, a label at a time, smallest offsets first on ties.

    The argmax of calibrated probabilities is the most accurate decision, and it answers rare
    labels rarely; a small push towards them finds many more of them at almost no cost in
    accuracy. Returns the offsets and a record (accuracy and macro-F1 before and after)."""
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))
    plain = log_probs.argmax(1)
    floor = (plain == labels).mean() - ACCURACY_TOLERANCE
    offsets = np.zeros(probs.shape[1])
    best = macro_f1(labels, plain)
    present = sorted(set(labels.tolist()))
    for _ in range(rounds):
        improved = False
        for label in present:
            for value in OFFSETS:
                trial = offsets.copy()
                trial[label] = value
                predicted = (log_probs + trial).argmax(1)
                if (predicted == labels).mean() < floor - 1e-12:
                    continue
                score = macro_f1(labels, predicted)
                if score > best + 1e-9:
                    best, offsets, improved = score, trial, True
        if not improved:
            break
    decided = (log_probs + offsets).argmax(1)
    return offsets, {"accuracy_before": float((plain == labels).mean()),
                     "accuracy_after": float((decided == labels).mean()),
                     "macro_f1_before": macro_f1(labels, plain), "macro_f1_after": best}


def _macro_f1_of(confusion: np.ndarray) -> np.ndarray:
    """(B,) macro-F1 of confusion matrices (B, C, C) [true, predicted], over the labels present."""
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    support, predicted = confusion.sum(2), confusion.sum(1)
    f1 = np.where(support + predicted > 0, 2 * tp / np.maximum(support + predicted, 1), 0.0)
    present = support > 0
    return (f1 * present).sum(1) / np.maximum(present.sum(1), 1)


def judge_offsets(probs: np.ndarray, labels: np.ndarray, offsets: np.ndarray, units: Units,
                  seed: int = 0) -> Earned:
    """Whether the offsets' macro-F1 gain over none is earned on the held-out ``units``: the
    95 % interval of the difference in macro-F1 over a bootstrap of units (`sgmft.decision.earned`)."""
    classes = probs.shape[1]
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))
    plain, decided = log_probs.argmax(1), (log_probs + offsets).argmax(1)
    per_unit = np.zeros((2, units.count, classes * classes))
    for row, predicted in enumerate((plain, decided)):
        np.add.at(per_unit[row], (units.unit, labels * classes + predicted), 1.0)

    def difference(counts: np.ndarray) -> np.ndarray:
        before, after = ((counts @ part).reshape(-1, classes, classes) for part in per_unit)
        return _macro_f1_of(after) - _macro_f1_of(before)

    gain = float(difference(np.ones((1, units.count)))[0])
    low, high = statistic_interval(difference, units, seed)
    default, candidate = [0.0] * classes, [round(float(v), 2) for v in offsets]
    return judge("decision offsets", default, candidate, gain, low, high, units,
                 "out-of-fold macro-F1, higher is better (gain = candidate - default)")
