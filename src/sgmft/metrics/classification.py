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
