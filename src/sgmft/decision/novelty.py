"""Novelty and drift: is a post, or a batch of posts, unlike the posts the run was trained on?

Per post and per modality, a **novelty score**: the mean distance of its L2-normalised features
to those of the ``K`` nearest training posts (`NoveltyIndex.scores`; exact
search, by FAISS's flat index when ``faiss-cpu`` is installed and by a chunked matrix product
otherwise). It becomes a **conformal p-value** (`NoveltyIndex.p_values`) against the same
scores of posts held out of training: the run's calibration part (whole groups none of the
model saw), or, without one, the validated posts of each fold scored against the reference posts
of the other folds. For a post drawn as those were, P(p <= alpha) <= alpha: the flag
``unlike_training`` (p <= alpha in a modality) fires at its nominal rate on posts like the
training posts, and far more often on posts of a new event.

Per batch, a **two-sample test** per modality (`drift_report`): a logistic-regression domain
classifier between reference posts and the batch (on a PCA of the normalised features plus the
distance to its span, `Reduction`), its 5-fold cross-validated AUC with a 95 %
interval (Hanley and McNeil 1982): 0.5 when the batch is like the training posts, 1 when it can
be told apart post by post; and the share of flagged posts.

The same classifier on both modalities gives the **density ratios** of weighted split-conformal
prediction under a covariate shift (`density_ratios`; Tibshirani, Barber, Candès and Ramdas
2019), used by `sgmft.metrics.conformal.weighted_thresholds`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from sgmft.io import atomic_write

MODALITIES = ("text", "image")
#: training posts kept as the reference set, PCA components, neighbours, the flag's level
REFERENCE_ROWS, COMPONENTS, NEIGHBOURS, ALPHA = 10_000, 64, 5, 0.05
#: rows of each side the domain classifier is fitted on
DOMAIN_ROWS = 2000
NOVELTY_FILE = "novelty.safetensors"


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_distances(refs: np.ndarray, queries: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """(Q, k) Euclidean distances of each query (Q, P) to its k nearest rows of ``refs`` (R, P),
    ascending: FAISS's exact flat index when installed, else chunked matrix products."""
    k = min(k, len(refs))
    refs, queries = np.ascontiguousarray(refs, np.float32), np.ascontiguousarray(queries, np.float32)
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        index = faiss.IndexFlatL2(refs.shape[1])
        index.add(refs)
        squared, _ = index.search(queries, k)
        return np.sqrt(np.maximum(squared, 0.0))
    r, out = torch.from_numpy(refs), []
    for start in range(0, len(queries), chunk):
        q = torch.from_numpy(queries[start : start + chunk])
        squared = (q * q).sum(1, keepdim=True) - 2 * q @ r.T + (r * r).sum(1)[None]
        out.append(torch.topk(squared, k, dim=1, largest=False).values.clamp_min(0).sqrt().numpy())
    return np.concatenate(out) if out else np.zeros((0, k), np.float32)


@dataclass
class Reduction:
    """L2-normalise, centre, project on the top principal axes, and append the distance to
    their span: (N, D) -> (N, P + 1). The last coordinate keeps what the axes of the training
    posts cannot show: a new event's posts often differ along directions the training posts
    never varied in."""

    mean: np.ndarray  # (D,)
    basis: np.ndarray  # (D, P)

    @classmethod
    def fit(cls, x: np.ndarray, components: int = COMPONENTS) -> Reduction:
        z = _normalised(x).astype(np.float64)
        mean = z.mean(0)
        _, _, vt = np.linalg.svd(z - mean, full_matrices=False)
        return cls(mean.astype(np.float32), vt[:components].T.astype(np.float32).copy())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        centred = _normalised(x) - self.mean
        projected = centred @ self.basis
        residual = np.sqrt(np.maximum((centred * centred).sum(1) - (projected * projected).sum(1), 0.0))
        return np.concatenate([projected, residual[:, None]], 1).astype(np.float32)


@dataclass
class NoveltyIndex:
    """Per modality: the reduction, the reference posts (reduced, and whole for the nearest
    neighbours) and the held-out posts' sorted novelty scores (n,) and reduced features
    (n, P + 1), which calibrate the p-values and the density ratios."""

    reductions: dict[str, Reduction]
    refs: dict[str, np.ndarray]  # (R, P + 1) reduced, for the domain classifier
    neighbours: dict[str, np.ndarray]  # (R, D) L2-normalised float16, for the novelty scores
    calibration: dict[str, np.ndarray]  # sorted scores per modality
    calibration_features: dict[str, np.ndarray]  # (n, P) per modality, in calibration-post order
    how: str
    alpha: float = ALPHA

    def reduce(self, name: str, x: np.ndarray) -> np.ndarray:
        return self.reductions[name](x)

    def reduced(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{modality: (N, D)} features -> {modality: (N, P)} reduced."""
        return {name: self.reduce(name, np.asarray(features[name])) for name in MODALITIES}

    def scores(self, name: str, x: np.ndarray) -> np.ndarray:
        """(N,) novelty scores of features x (N, D): the mean distance of the L2-normalised
        features to their `NEIGHBOURS` nearest reference posts."""
        return nearest_distances(self.neighbours[name], _normalised(x), NEIGHBOURS).mean(1)

    def p_values(self, name: str, x: np.ndarray) -> np.ndarray:
        """(N,) conformal p-values of features x (N, D): (1 + #{held-out scores >= s}) / (n + 1).
        Small when a post is farther from the training posts than held-out posts are."""
        held = self.calibration[name]
        above = len(held) - np.searchsorted(held, self.scores(name, x), side="left")
        return (1.0 + above) / (len(held) + 1.0)

    def flags(self, features: dict[str, np.ndarray], present: np.ndarray | None = None) -> dict[str, Any]:
        """Per post: ``p`` {modality: (N,) p-values, NaN where the post lacks it} and ``unlike``
        (N, 2) booleans, p <= alpha per modality, of features {modality: (N, D)}; present (N, 2):
        which modalities each post has (default both)."""
        n = len(features["text"])
        present = np.ones((n, 2), bool) if present is None else np.asarray(present, bool)
        p = {}
        for column, name in enumerate(MODALITIES):
            values = np.full(n, np.nan)
            rows = np.nonzero(present[:, column])[0]
            if len(rows):
                values[rows] = self.p_values(name, np.asarray(features[name])[rows])
            p[name] = values
        unlike = np.stack([np.nan_to_num(p[name], nan=1.0) <= self.alpha for name in MODALITIES], 1)
        return {"p": p, "unlike": unlike}

    def save(self, path: Path) -> None:
        tensors = {}
        for name in MODALITIES:
            tensors |= {
                f"{name}.mean": self.reductions[name].mean,
                f"{name}.basis": self.reductions[name].basis,
                f"{name}.refs": self.refs[name],
                f"{name}.calibration": self.calibration[name],
                f"{name}.calibration_features": self.calibration_features[name],
            }
        tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}
        tensors |= {
            f"{name}.neighbours": np.ascontiguousarray(self.neighbours[name], np.float16)
            for name in MODALITIES
        }
        meta = {"how": self.how, "alpha": json.dumps(self.alpha)}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    @classmethod
    def load(cls, path: Path) -> NoveltyIndex:
        from safetensors import safe_open

        with safe_open(str(path), "np") as handle:
            meta = handle.metadata()
        t = load_file(str(path))
        return cls(
            {n: Reduction(t[f"{n}.mean"], t[f"{n}.basis"]) for n in MODALITIES},
            {n: t[f"{n}.refs"] for n in MODALITIES},
            {n: t[f"{n}.neighbours"] for n in MODALITIES},
            {n: np.sort(t[f"{n}.calibration"].astype(np.float64)) for n in MODALITIES},
            {n: t[f"{n}.calibration_features"] for n in MODALITIES},
            meta["how"],
            json.loads(meta["alpha"]),
        )


def fit_novelty(
    rows: Callable[[str, np.ndarray], np.ndarray],
    n: int,
    held: dict[str, np.ndarray] | None,
    fold: np.ndarray | None = None,
    seed: int = 0,
) -> NoveltyIndex | None:
    """The novelty index of a run. ``rows(modality, index)``: (len(index), D) features of the
    posts the final model trains on (n of them; at most `REFERENCE_ROWS` are read as references);
    ``held``: the calibration part's {modality: (m, D)} (posts none of it saw), or None: then up
    to `REFERENCE_ROWS` posts with a validation ``fold`` (n,) (>= 0) are scored against the
    references of the other folds. None when neither gives held-out posts."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, min(n, REFERENCE_ROWS), replace=False))
    raw = {name: np.asarray(rows(name, chosen), np.float32) for name in MODALITIES}
    reductions = {name: Reduction.fit(raw[name]) for name in MODALITIES}
    refs = {name: reductions[name](raw[name]) for name in MODALITIES}
    neighbours = {name: _normalised(raw[name]).astype(np.float16) for name in MODALITIES}
    scores, features = {}, {}
    if held is not None and len(held["text"]):
        how = f"{len(held['text'])} calibration posts (whole groups held out of training)"
        for name in MODALITIES:
            x = np.asarray(held[name], np.float32)
            features[name] = reductions[name](x)
            scores[name] = nearest_distances(neighbours[name], _normalised(x), NEIGHBOURS).mean(1)
    elif fold is not None and (fold >= 0).any():
        ref_fold = fold[chosen]
        validated = np.nonzero(fold >= 0)[0]
        validated = np.sort(rng.choice(validated, min(len(validated), REFERENCE_ROWS), replace=False))
        how = (
            f"{len(validated)} validated posts, each scored against the reference posts of the other folds "
            "(no calibration part was held out)"
        )
        for name in MODALITIES:
            x = np.asarray(rows(name, validated), np.float32)
            features[name] = reductions[name](x)
            scores[name] = np.full(len(validated), np.inf)
            for k in np.unique(fold[validated]):
                inside = fold[validated] == k
                others = neighbours[name][ref_fold != k]
                if len(others):
                    scores[name][inside] = nearest_distances(others, _normalised(x[inside]), NEIGHBOURS).mean(
                        1
                    )
    else:
        return None
    return NoveltyIndex(
        reductions, refs, neighbours, {k: np.sort(v) for k, v in scores.items()}, features, how
    )


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
    shifted = [
        n
        for n in MODALITIES
        if (report.get(n) or {}).get("auc_low") is not None and report[n]["auc_low"] > 0.5
    ]
    verdict = (
        f"these posts are unlike the training posts in {' and '.join(shifted)}: probabilities, "
        "sets and error rates measured on training-like posts may not hold"
        if shifted
        else "no shift detected from the training posts"
    )
    return "drift: " + "; ".join(parts) + f" ({verdict}; expected near 0.5 and {report['alpha']:.0%})"


def density_ratios(
    index: NoveltyIndex, reduced: dict[str, np.ndarray], seed: int = 0, clip: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Weights of weighted split-conformal prediction: w(x) = dP_batch / dP_calibration (x),
    estimated by a domain classifier on both modalities' reduced features ({modality: (N, P)})
    between the calibration posts and the batch (fitted on at most `DOMAIN_ROWS` batch rows;
    out-of-fold for the rows it was fitted on), its odds rescaled by the sides' sizes. Returns
    (calibration weights (n,), batch weights (N,))."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    held = np.concatenate([index.calibration_features[n] for n in MODALITIES], 1)
    rows = np.concatenate([np.asarray(reduced[n]) for n in MODALITIES], 1)
    sample = _sample(len(rows), DOMAIN_ROWS, seed)
    fitted = _domain_probabilities(held, rows[sample], seed)
    batch_p = np.empty(len(rows))
    batch_p[sample] = fitted[len(held) :]
    rest = np.setdiff1d(np.arange(len(rows)), sample)
    if len(rest):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        model.fit(np.concatenate([held, rows[sample]]), np.r_[np.zeros(len(held)), np.ones(len(sample))])
        batch_p[rest] = model.predict_proba(rows[rest])[:, 1]
    odds = len(held) / len(sample)
    calibration_p = np.clip(fitted[: len(held)], clip, 1 - clip)
    batch_p = np.clip(batch_p, clip, 1 - clip)
    return calibration_p / (1 - calibration_p) * odds, batch_p / (1 - batch_p) * odds


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
        import hashlib

        keys = np.fromiter(
            (int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little") for i in ids),
            np.uint64,
            len(ids),
        )
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
