"""Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Metrics of integer predictions against integer labels over ``labels`` classes.

    Macro-F1 averages over the labels that have posts in ``y_true`` (a label no post carries
    has no F1 to speak of: counting it as 0 would only say the test set lacks it); which labels
    those are is recorded as ``macro_f1_labels``.
    """
    index = list(range(len(labels)))
    supported = sorted({int(v) for v in np.asarray(y_true).tolist()})
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=index, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=supported, average="macro", zero_division=0))
        if supported else 0.0,
        "macro_f1_labels": [labels[i] for i in supported],
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=index).tolist(),
    }


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the labels that have posts in ``y_true``."""
    return float(f1_score(y_true, y_pred, labels=sorted(set(np.asarray(y_true).tolist())), average="macro",
                          zero_division=0))


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
