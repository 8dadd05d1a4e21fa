"""The parts of an evaluation beyond accuracy: how far the probabilities can be trusted
(log-loss, Brier, ECE beside the floor of a perfectly calibrated model of the same size, with
and without the run's temperature), prediction sets and their coverage, selective prediction,
per-group scores, and warnings in plain words."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sgmft.metrics.calibration import brier, ece, ece_floor, log_loss, reliability, softmax
from sgmft.metrics.classification import classification_metrics
from sgmft.metrics.conformal import (
    NO_SETS,
    class_conditional_sets,
    mondrian_thresholds,
    prediction_sets,
    set_coverage,
    threshold_from_scores,
)
from sgmft.metrics.intervals import SMALL_PART, SMALL_PER_LABEL, wilson


def calibration_scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Log-loss, Brier, ECE (15 bins, top label) and the ECE floor of these confidences."""
    floor = ece_floor(probs.max(1))
    return {"log_loss": log_loss(probs, labels), "brier": brier(probs, labels), "ece": ece(probs, labels),
            "ece_floor_median": floor["median"], "ece_floor_p95": floor["p95"],
            "ece_floor_mean": floor["mean"],
            "mean_confidence": float(probs.max(1).mean())}


def calibration_report(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, Any]:
    """The scores of the served (calibrated) probabilities, of the same without the run's
    temperature, and the reliability bins of the served ones."""
    served = softmax(logits)
    return {**calibration_scores(served, labels), "temperature": temperature,
            "uncalibrated": calibration_scores(softmax(logits * temperature), labels),
            "reliability": reliability(served, labels)}


def accuracy_interval(right: int, n: int) -> list[float]:
    """The 95 % Wilson interval of an accuracy of ``right`` of ``n``."""
    return list(wilson(right, n))


def selective(probs: np.ndarray, labels: np.ndarray, decided: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy when only the most confident posts are answered: the curve (coverage, accuracy)
    and its area (1 is perfect; a model whose confidence says nothing scores its accuracy).
    ``decided`` (N,): the answers given (default the most probable labels), ranked by their own
    probability."""
    decided = probs.argmax(1) if decided is None else decided
    order = np.argsort(-probs[np.arange(len(probs)), decided], kind="stable")
    right = (decided == labels)[order].astype(float)
    answered = np.arange(1, len(right) + 1)
    accuracy = np.cumsum(right) / answered
    coverage = answered / len(right)
    return {"coverage": coverage, "accuracy": accuracy, "area": float(accuracy.mean())}


def set_report(probs: np.ndarray, labels: np.ndarray, threshold: float | None,
               coverage: float, decided: np.ndarray | None = None) -> dict[str, Any]:
    """Empirical coverage and mean size of the prediction sets at ``coverage`` (None: the run
    has no calibration posts)."""
    if threshold is None:
        return {"target": coverage, "threshold": None,
                "note": NO_SETS}
    sets = prediction_sets(probs, threshold, decided)
    return {"target": coverage, "threshold": threshold, **set_coverage(sets, labels),
            "interval": accuracy_interval(int(sets[np.arange(len(labels)), labels].sum()), len(labels))}


def mondrian_report(probs: np.ndarray, labels: np.ndarray, decided: np.ndarray, names: list[str],
                    test_values: Sequence[str | None], calibration: list[dict[str, Any]],
                    calibration_values: Sequence[str | None], column: str, coverage: float) -> dict[str, Any]:
    """Group-conditional (Mondrian) prediction sets by ``column`` and their coverage per group.

    By ``label``: a threshold per class from that class's calibration posts (class-conditional
    sets; a test post's label need not be known). By any other column: a threshold per value,
    a test post taking its value's (its group's calibration posts are exchangeable with it) or,
    for a value no calibration post has (a new event, a new user), the pooled one, counted."""
    scores = np.asarray([p["score"] for p in calibration])
    pooled = threshold_from_scores(scores, coverage)
    if column == "label":
        per = mondrian_thresholds(scores, [p["label"] for p in calibration], coverage)
        thresholds = np.asarray([per.get(name, 1.0) for name in names])
        sets = class_conditional_sets(probs, thresholds, decided)
        keys = [names[y] for y in labels]
        used = {name: float(t) for name, t in zip(names, thresholds, strict=True)}
    else:
        per = mondrian_thresholds(scores, [v or "(none)" for v in calibration_values], coverage)
        keys = [v or "(none)" for v in test_values]
        row = np.asarray([per.get(k, pooled) for k in keys])
        sets = prediction_sets(probs, 0.0, decided) | (probs >= 1.0 - row[:, None] - 1e-12)
        used = {k: float(per.get(k, pooled)) for k in sorted(set(keys))}
    counts: dict[str, int] = {}
    for p, value in zip(calibration, calibration_values, strict=True):
        key = p["label"] if column == "label" else (value or "(none)")
        counts[key] = counts.get(key, 0) + 1
    table = {}
    keys_array = np.asarray(keys, dtype=object)
    for key in sorted(set(keys)):
        inside = keys_array == key
        table[key] = {"posts": int(inside.sum()), "calibration_posts": counts.get(key, 0),
                      "threshold": round(used[key], 6), **set_coverage(sets[inside], labels[inside])}
    unseen = sum(v["posts"] for v in table.values() if not v["calibration_posts"])
    return {"by": column, "target": coverage, **set_coverage(sets, labels), "per_group": table,
            "posts_of_groups_without_calibration": unseen}


def per_group(values: Sequence[str | None], labels: np.ndarray, predicted: np.ndarray,
              names: list[str]) -> dict[str, dict[str, Any]]:
    """Accuracy, macro-F1 and posts per value of a grouping column (posts without one: "(none)")."""
    table = {}
    keys = np.asarray([v or "(none)" for v in values], dtype=object)
    for value in sorted(set(keys)):
        inside = keys == value
        scores = classification_metrics(labels[inside], predicted[inside], names)
        table[value] = {"n": int(inside.sum()), "accuracy": scores["accuracy"],
                        "macro_f1": scores["macro_f1"]}
    return table


def warnings_for(metrics: dict[str, Any], majority: float, n: int) -> list[str]:
    """Plain-words warnings about a test result: below always answering the most common class,
    below one of the model's own unimodal probes, or too few posts to mean much."""
    found = []
    accuracy = metrics["accuracy"]
    if accuracy < majority:
        found.append(f"the model ({accuracy:.1%}) is below always answering the training split's most "
                     f"common class ({majority:.1%}) on these posts")
    for name in ("text_only", "image_only"):
        alone = metrics[name]["accuracy"]
        if alone - accuracy >= 1 / max(n, 1) - 1e-12:
            found.append(f"the {name.replace('_only', '')} probe alone ({alone:.1%}) is more accurate than "
                         f"the model ({accuracy:.1%}) on these posts")
    low, high = metrics["accuracy_interval"]
    supports = [c["support"] for c in metrics["per_class"].values() if c["support"]]
    if n < SMALL_PART or min(supports, default=0) < SMALL_PER_LABEL:
        found.append(f"only {n} test post(s), {min(supports, default=0)} of the rarest label: accuracy "
                     f"{accuracy:.1%} could be anywhere in [{low:.1%}, {high:.1%}] (95 % Wilson interval), "
                     "and the per-label scores say less still")
    return found
