"""Drift of a batch from the training posts (`sgmft.decision.novelty` holds the per-post side).

Per modality, a **two-sample test** (`drift_report`): a logistic-regression domain classifier
between reference posts and the batch, on the reduced features (`novelty.Reduction`: a PCA of the
normalised features plus the distance to its span), its 5-fold cross-validated AUC with a 95 %
interval (Hanley and McNeil 1982): 0.5 when the batch is like the training posts, 1 when it can
be told apart post by post; and the share of flagged posts. A streamed batch keeps a sample
whatever its order (`DriftSample`).

The same classifier on both modalities gives the **density ratios** of weighted split-conformal
prediction under a covariate shift (`density_ratios`; Tibshirani, Barber, Candès and Ramdas
2019), used by `sgmft.metrics.conformal.weighted_thresholds`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sgmft.decision.novelty import MODALITIES, NoveltyIndex

#: rows of each side the domain classifier is fitted on
DOMAIN_ROWS = 2000


def hanley_mcneil(auc: float, positives: int, negatives: int) -> float:
    """The standard error of an AUC (Hanley and McNeil 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / max(1, positives * negatives)
    return math.sqrt(max(variance, 0.0))


def _domain_probabilities(reference: np.ndarray, batch: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold P(batch | x) of a standardised logistic regression between the rows of
    ``reference`` (label 0) and ``batch`` (label 1), concatenated in that order."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([reference, batch]).astype(np.float64)
    y = np.r_[np.zeros(len(reference)), np.ones(len(batch))]
    folds = int(min(5, len(reference), len(batch)))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    return cross_val_predict(
        model, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba"
    )[:, 1]


def _sample(rows: int, limit: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(rows, min(rows, limit), replace=False))


def drift_report(
    index: NoveltyIndex, reduced: dict[str, np.ndarray], unlike: np.ndarray | None = None, seed: int = 0
) -> dict[str, Any]:
    """Per modality, the domain classifier's cross-validated AUC between the reference posts and
    the batch (reduced features {modality: (N, P)}, at most `DOMAIN_ROWS` rows of each side), its
    95 % interval, and the share of the batch flagged (``unlike`` (N, 2), `NoveltyIndex.flags`)."""
    from sklearn.metrics import roc_auc_score

    report: dict[str, Any] = {}
    for column, name in enumerate(MODALITIES):
        z = np.asarray(reduced[name])
        if len(z) < 2:
            report[name] = {"auc": None, "note": "fewer than two posts: no two-sample test"}
            continue
        refs = index.refs[name][_sample(len(index.refs[name]), DOMAIN_ROWS, seed)]
        rows = z[_sample(len(z), DOMAIN_ROWS, seed + 1)]
        p = _domain_probabilities(refs, rows, seed)
        auc = float(roc_auc_score(np.r_[np.zeros(len(refs)), np.ones(len(rows))], p))
        se = hanley_mcneil(auc, len(rows), len(refs))
        report[name] = {
            "auc": round(auc, 4),
            "auc_low": round(max(0.0, auc - 1.96 * se), 4),
            "auc_high": round(min(1.0, auc + 1.96 * se), 4),
            "posts": len(z),
            "flagged": None if unlike is None else round(float(unlike[:, column].mean()), 4),
        }
    if unlike is not None:
        report["unlike_both"] = round(float(unlike.all(1).mean()), 4)
    report["alpha"] = index.alpha
    return report


def shifted_modalities(report: dict[str, Any] | None) -> list[str]:
    """The modalities in which a drift report tells the batch from the training posts (the
    domain classifier's AUC interval above 0.5)."""
    return [n for n in MODALITIES if ((report or {}).get(n) or {}).get("auc_low") is not None
            and report[n]["auc_low"] > 0.5]


def drift_in_words(report: dict[str, Any]) -> str:
    """One line: each modality's AUC with its interval and flagged share, and what it means."""
    parts = []
    for name in MODALITIES:
        part = report.get(name) or {}
        if part.get("auc") is None:
            continue
        flagged = "" if part.get("flagged") is None else f", {part['flagged']:.0%} of posts flagged"
        parts.append(f"{name} AUC {part['auc']:.2f} [{part['auc_low']:.2f}, {part['auc_high']:.2f}]{flagged}")
    if not parts:
        return "drift: too few posts to test"
    shifted = shifted_modalities(report)
    verdict = (
        f"these posts are unlike the training posts in {' and '.join(shifted)}: probabilities, "
        "sets and error rates measured on training-like posts may not hold"
        if shifted
        else "no shift detected from the training posts"
    )
    return "drift: " + "; ".join(parts) + f" ({verdict}; expected near 0.5 and {report['alpha']:.0%})"


def _odds(p: np.ndarray, prior: float, clip: float = 1e-6) -> np.ndarray:
    p = np.clip(p, clip, 1 - clip)
    return p / (1 - p) * prior


@dataclass
class ShiftWeights:
    """The density ratio w(x) = dP_batch / dP_calibration (x) of weighted split-conformal
    prediction, from a domain classifier (standardised logistic regression) on both modalities'
    reduced features between the calibration posts and (a sample of) the batch, its odds rescaled
    by the two sides' sizes. ``calibration`` (n,): the calibration posts' weights, out of fold.

    The ratio is used only when the classifier tells the sides apart: its out-of-fold AUC's 95 %
    interval above 0.5 (``detected``). Otherwise every weight is 1 (plain split conformal): a
    classifier fitted to noise gives weights that vary by chance, and on mvsa-lab5 (no shift) such
    weights left 52 of 315 calibration posts' worth of weight and covered 83 % for a 90 % target."""

    calibration: np.ndarray
    model: Any
    prior: float
    sample: int
    auc: float
    auc_low: float

    @property
    def detected(self) -> bool:
        return self.auc_low > 0.5

    def weights(self, reduced: dict[str, np.ndarray]) -> np.ndarray:
        """(N,) the weights of posts given their reduced features {modality: (N, P + 1)}."""
        if not self.detected:
            return np.ones(len(reduced["text"]))
        rows = np.concatenate([np.asarray(reduced[n]) for n in MODALITIES], 1).astype(np.float64)
        return _odds(self.model.predict_proba(rows)[:, 1], self.prior)

    def record(self) -> dict[str, Any]:
        return {"auc": round(self.auc, 4), "auc_low": round(self.auc_low, 4), "weighted": self.detected,
                "batch_posts": self.sample}


def fit_shift_weights(index: NoveltyIndex, sample: dict[str, np.ndarray], seed: int = 0) -> ShiftWeights:
    """`ShiftWeights` between the run's calibration posts and a sample of the batch (reduced
    features {modality: (m, P + 1)}, at most `DOMAIN_ROWS` rows)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    held = np.concatenate([index.calibration_features[n] for n in MODALITIES], 1)
    rows = np.concatenate([np.asarray(sample[n]) for n in MODALITIES], 1)
    out_of_fold = _domain_probabilities(held, rows, seed)
    sides = np.r_[np.zeros(len(held)), np.ones(len(rows))]
    auc = float(roc_auc_score(sides, out_of_fold))
    low = auc - 1.96 * hanley_mcneil(auc, len(rows), len(held))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    model.fit(np.concatenate([held, rows]).astype(np.float64), sides)
    prior = len(held) / len(rows)
    calibration = _odds(out_of_fold[: len(held)], prior) if low > 0.5 else np.ones(len(held))
    return ShiftWeights(calibration, model, prior, len(rows), auc, low)


def density_ratios(
    index: NoveltyIndex, reduced: dict[str, np.ndarray], seed: int = 0
) -> tuple[np.ndarray, np.ndarray, ShiftWeights]:
    """Weights of weighted split-conformal prediction for a batch held at once ({modality:
    (N, P + 1)} reduced features): `fit_shift_weights` on a sample of at most `DOMAIN_ROWS` of its
    posts. Returns (calibration weights (n,), batch weights (N,), the fitted weights)."""
    sample = _sample(len(reduced["text"]), DOMAIN_ROWS, seed)
    shift = fit_shift_weights(index, {n: np.asarray(reduced[n])[sample] for n in MODALITIES}, seed)
    return shift.calibration, shift.weights(reduced), shift


def id_keys(ids: list[str]) -> np.ndarray:
    """(n,) uint64 hashes of post ids: the posts whose keys are lowest are a uniform sample that
    does not depend on the order the posts come in."""
    import hashlib

    return np.fromiter((int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little")
                        for i in ids), np.uint64, len(ids))


class DriftSample:
    """What a streamed batch keeps for its drift report: the reduced features of a uniform
    sample of at most ``limit`` posts (the posts whose id hashes lowest: the same sample whatever
    the order or the blocks, so a resumed run keeps what an uninterrupted one would) and the
    counts of flagged posts over every post."""

    def __init__(self, limit: int = DOMAIN_ROWS):
        self.limit = limit
        self.keys = np.zeros(0, np.uint64)
        self.rows = {name: np.zeros((0, 0), np.float32) for name in MODALITIES}
        self.counts = np.zeros(4, np.int64)  # posts, flagged text, flagged image, flagged both

    def add(self, ids: list[str], reduced: dict[str, np.ndarray], unlike: np.ndarray) -> None:
        """Posts ``ids`` with their reduced features {modality: (n, P + 1)} and flags (n, 2)."""
        keys = id_keys(ids)
        self.counts += [len(ids), unlike[:, 0].sum(), unlike[:, 1].sum(), unlike.all(1).sum()]
        merged = np.concatenate([self.keys, keys])
        keep = np.argsort(merged, kind="stable")[: self.limit]
        self.keys = merged[keep]
        for name in MODALITIES:
            old = (
                self.rows[name] if len(self.rows[name]) else np.zeros((0, reduced[name].shape[1]), np.float32)
            )
            self.rows[name] = np.concatenate([old, np.asarray(reduced[name], np.float32)])[keep]

    def state(self) -> dict[str, np.ndarray]:
        return {"keys": self.keys, "counts": self.counts, **{f"rows_{n}": self.rows[n] for n in MODALITIES}}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], limit: int = DOMAIN_ROWS) -> DriftSample:
        sample = cls(limit)
        sample.keys, sample.counts = state["keys"].astype(np.uint64), state["counts"].astype(np.int64)
        sample.rows = {n: state[f"rows_{n}"] for n in MODALITIES}
        return sample

    def report(self, index: NoveltyIndex, seed: int = 0) -> dict[str, Any]:
        """`drift_report` of the sample, with the flagged shares of every post."""
        posts = int(self.counts[0])
        if posts < 2:
            return {"posts": posts, "note": "fewer than two posts: no two-sample test", "alpha": index.alpha}
        report = drift_report(index, self.rows, None, seed)
        for column, name in enumerate(MODALITIES):
            report[name] |= {
                "flagged": round(float(self.counts[1 + column] / posts), 4),
                "posts": posts,
                "tested_on": len(self.keys),
            }
        report["unlike_both"] = round(float(self.counts[3] / posts), 4)
        report["words"] = drift_in_words(report)
        return report
