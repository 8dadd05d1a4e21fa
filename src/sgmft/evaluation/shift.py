"""`evaluate` under a shift: how unlike the training posts the test posts are (novelty flags per
post, the two-sample test per modality, for the whole split and per group), prediction sets
weighted for the covariate shift, and the answers given once "unsure" is allowed."""

from __future__ import annotations

from typing import Any

import numpy as np

from sgmft.decision.drift import density_ratios, drift_in_words, drift_report
from sgmft.decision.novelty import MODALITIES, NoveltyIndex
from sgmft.decision.probes import STREAM_ROWS, gather
from sgmft.evaluation.report import accuracy_interval
from sgmft.metrics.conformal import set_coverage, sets_of_thresholds, weighted_thresholds

#: groups with fewer test posts get no two-sample test of their own; at most this many are tested
GROUP_MIN_POSTS, GROUPS_TESTED = 30, 12


def scan(index: NoveltyIndex, tensors: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The reduced features {modality: (N, P + 1)} and the novelty flags ``unlike`` (N, 2) of
    every post, read `STREAM_ROWS` at a time."""
    n = len(tensors["label"])
    reduced = {name: np.zeros((n, index.refs[name].shape[1]), np.float32) for name in MODALITIES}
    unlike = np.zeros((n, 2), bool)
    for start in range(0, n, STREAM_ROWS):
        rows = np.arange(start, min(n, start + STREAM_ROWS))
        features = {name: gather(tensors[name], rows).numpy() for name in MODALITIES}
        for name in MODALITIES:
            reduced[name][rows] = index.reduce(name, features[name])
        unlike[rows] = index.flags(features)["unlike"]
    return reduced, unlike


def weighted_sets(
    index: NoveltyIndex,
    calibration: list[dict[str, Any]],
    reduced: dict[str, np.ndarray],
    probs: np.ndarray,
    decided: np.ndarray,
    labels: np.ndarray,
    coverage: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Weighted split-conformal sets of these posts (one batch; density ratios from the domain
    classifier between the calibration posts and them) and their coverage on ``labels``."""
    scores = np.asarray([p["score"] for p in calibration])
    w_calibration, w_batch, shift = density_ratios(index, reduced, seed)
    thresholds = weighted_thresholds(scores, w_calibration, w_batch, coverage)
    sets = sets_of_thresholds(probs, thresholds, decided)
    every = float((thresholds >= 1.0).mean())
    found = {
        "target": coverage,
        **set_coverage(sets, labels),
        "interval": accuracy_interval(int(sets[np.arange(len(labels)), labels].sum()), len(labels)),
        "every_label": round(every, 4),
        "shift": shift.record(),
        "effective_calibration_posts": round(float(w_calibration.sum() ** 2 / (w_calibration**2).sum()), 1),
        "how": "weighted split conformal (Tibshirani et al. 2019), density ratios from a domain classifier "
        "between the calibration posts and these posts"
        + ("" if shift.detected else "; it could not tell them apart, so every weight is 1 (plain sets)"),
    }
    if every:
        found["note"] = (
            f"{every:.0%} of the posts got every label: their density ratio left the calibration "
            "posts too little weight (posts unlike any the sets were calibrated on)"
        )
    return found


def shift_report(
    run,
    tensors: dict[str, Any],
    probs: np.ndarray,
    labels: np.ndarray,
    decided: np.ndarray,
    answers: np.ndarray,
    coverage: float,
    groups: list | None = None,
    novel_unsure: bool = True,
) -> dict[str, Any]:
    """Novelty, drift (whole split and per group), weighted sets and the answered posts.

    probs (N, C) the calibrated probabilities, labels (N,), decided (N,) the decided labels,
    answers (N,) the model's answers (-1: unsure, `MultimodalModel.answer`); groups (N,) each
    post's group value or None. With ``novel_unsure`` a post flagged in both modalities is
    unsure too."""
    index: NoveltyIndex | None = run.novelty
    unsure = answers < 0
    report: dict[str, Any] = {}
    if index is None:
        report["novelty"] = {"how": "the run has no novelty index (no posts were held out to calibrate it)"}
    else:
        reduced, unlike = scan(index, tensors)
        report["novelty"] = {
            "flagged": round(float(unlike.any(1).mean()), 4),
            "flagged_text": round(float(unlike[:, 0].mean()), 4),
            "flagged_image": round(float(unlike[:, 1].mean()), 4),
            "unlike_both": round(float(unlike.all(1).mean()), 4),
            "alpha": index.alpha,
            "how": index.how,
        }
        report["drift"] = drift_report(index, reduced, unlike, run.config.train.seed)
        report["drift"]["words"] = drift_in_words(report["drift"])
        if groups is not None:
            report["drift_by_group"] = _by_group(index, reduced, unlike, groups, run.config.train.seed)
        if run.conformal_posts():
            report["weighted_sets"] = weighted_sets(
                index, run.conformal_posts(), reduced, probs, decided, labels, coverage, run.config.train.seed
            )
        if novel_unsure:
            unsure = unsure | unlike.all(1)
    answered = ~unsure
    right = decided == labels
    report["answered"] = {
        "share": round(float(answered.mean()), 4),
        "posts": int(answered.sum()),
        "accuracy": float(right[answered].mean()) if answered.any() else None,
        "accuracy_all": float(right.mean()),
        "how": "unsure: an answer less than the run's min_gain above its label's training share"
        + (", or a post unlike the training posts in both modalities" if novel_unsure else ""),
    }
    return report


def _by_group(
    index: NoveltyIndex, reduced: dict[str, np.ndarray], unlike: np.ndarray, groups: list, seed: int
) -> dict[str, Any]:
    """The two-sample test of each of the largest groups (at least `GROUP_MIN_POSTS` posts)."""
    values, counts = np.unique(np.asarray([str(g) for g in groups]), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    found = {}
    keys = np.asarray([str(g) for g in groups])
    for j in order[:GROUPS_TESTED]:
        if counts[j] < GROUP_MIN_POSTS:
            break
        mask = keys == values[j]
        found[str(values[j])] = drift_report(
            index, {n: reduced[n][mask] for n in MODALITIES}, unlike[mask], seed
        )
    return found
