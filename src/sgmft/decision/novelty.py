"""Novelty: is a post unlike the posts the run was trained on?

Per post and per modality, a **novelty score**: the mean distance of its L2-normalised features
to those of the ``K`` nearest training posts (`NoveltyIndex.scores`; exact
search, by FAISS's flat index when ``faiss-cpu`` is installed and by a chunked matrix product
otherwise). It becomes a **conformal p-value** (`NoveltyIndex.p_values`) against the same
scores of posts held out of training: the run's calibration part (whole groups none of the
model saw), or, without one, the validated posts of each fold scored against the reference posts
of the other folds. For a post drawn as those were, P(p <= alpha) <= alpha: the flag
``unlike_training`` (p <= alpha in a modality) fires at its nominal rate on posts like the
training posts, and far more often on posts of a new event.

The batch's side (the two-sample test, density ratios for weighted sets) is
`sgmft.decision.drift`; both read the same reference posts and `Reduction`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save_file

from sgmft.io import atomic_write

MODALITIES = ("text", "image")
#: training posts kept as the reference set, PCA components, neighbours, the flag's level
REFERENCE_ROWS, COMPONENTS, NEIGHBOURS, ALPHA = 5000, 64, 5, 0.05
#: the width the nearest-neighbour search works in: a random Gaussian projection of the
#: normalised features, which keeps distances within a few per cent in every direction (unlike a
#: PCA, which drops the directions the training posts never varied in)
PROJECTED = 256
NOVELTY_FILE = "novelty.safetensors"


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class NearestSearch:
    """Exact k-nearest-neighbour search over fixed references (R, P): FAISS's flat index when
    installed, else chunked matrix products. Built once and kept: the references are converted to
    float32 (and indexed) once, not at every query."""

    def __init__(self, refs: np.ndarray):
        self.refs = np.ascontiguousarray(refs, np.float32)
        try:
            import faiss
        except ImportError:
            faiss = None
        self.index = None
        if faiss is not None:
            self.index = faiss.IndexFlatL2(self.refs.shape[1])
            self.index.add(self.refs)

    def distances(self, queries: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
        """(Q, k) Euclidean distances of each query (Q, P) to its k nearest references, ascending."""
        k = min(k, len(self.refs))
        queries = np.ascontiguousarray(queries, np.float32)
        if self.index is not None:
            squared, _ = self.index.search(queries, k)
            return np.sqrt(np.maximum(squared, 0.0))
        r, out = torch.from_numpy(self.refs), []
        for start in range(0, len(queries), chunk):
            q = torch.from_numpy(queries[start : start + chunk])
            squared = (q * q).sum(1, keepdim=True) - 2 * q @ r.T + (r * r).sum(1)[None]
            out.append(torch.topk(squared, k, dim=1, largest=False).values.clamp_min(0).sqrt().numpy())
        return np.concatenate(out) if out else np.zeros((0, k), np.float32)


def nearest_distances(refs: np.ndarray, queries: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """(Q, k) Euclidean distances of each query (Q, P) to its k nearest rows of ``refs`` (R, P),
    ascending (`NearestSearch`, built for this one search)."""
    return NearestSearch(refs).distances(queries, k, chunk)


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
    neighbours: dict[str, np.ndarray]  # (R, Q) projected normalised float16, for the novelty scores
    projections: dict[str, np.ndarray]  # (D, Q) the random projection of each modality
    calibration: dict[str, np.ndarray]  # sorted scores per modality
    calibration_features: Mapping[str, np.ndarray]  # (n, P) per modality, in calibration-post order
    how: str
    alpha: float = ALPHA
    _search: dict[str, NearestSearch] = field(default_factory=dict, repr=False)  # built at first use

    def reduce(self, name: str, x: np.ndarray) -> np.ndarray:
        return self.reductions[name](x)

    def reduced(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{modality: (N, D)} features -> {modality: (N, P)} reduced."""
        return {name: self.reduce(name, np.asarray(features[name])) for name in MODALITIES}

    def scores(self, name: str, x: np.ndarray) -> np.ndarray:
        """(N,) novelty scores of features x (N, D): the mean distance of the L2-normalised
        features to their `NEIGHBOURS` nearest reference posts."""
        if name not in self._search:
            self._search[name] = NearestSearch(self.neighbours[name])
        return self._search[name].distances(self.embed(name, x), NEIGHBOURS).mean(1)

    def embed(self, name: str, x: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N, Q): normalised and randomly projected (`PROJECTED`)."""
        return _normalised(x) @ self.projections[name]

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
                f"{name}.projection": self.projections[name],
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
        """The index saved at ``path``; the held-out posts' reduced features, which grow with the
        calibration part and only the density ratios read, are read when first asked for."""
        from safetensors import safe_open

        with safe_open(str(path), "np") as handle:
            meta = handle.metadata()
            names = handle.keys()
            t = {key: handle.get_tensor(key) for key in names if not key.endswith(".calibration_features")}
        return cls(
            {n: Reduction(t[f"{n}.mean"], t[f"{n}.basis"]) for n in MODALITIES},
            {n: t[f"{n}.refs"] for n in MODALITIES},
            {n: t[f"{n}.neighbours"] for n in MODALITIES},
            {n: t[f"{n}.projection"] for n in MODALITIES},
            {n: np.sort(t[f"{n}.calibration"].astype(np.float64)) for n in MODALITIES},
            LazyTensors(path, {n: f"{n}.calibration_features" for n in MODALITIES}),
            meta["how"],
            json.loads(meta["alpha"]),
        )


class LazyTensors(Mapping[str, np.ndarray]):
    """{name: array} read from a safetensors file at first access (each once); a file replaced
    since is an error, not another run's rows."""

    def __init__(self, path: Path, keys: dict[str, str]):
        self.path, self.keys, self._read = path, keys, {}
        self._identity = _identity(path)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._read:
            from safetensors import safe_open

            if _identity(self.path) != self._identity:
                raise RuntimeError(f"{self.path} was replaced after it was opened: load the run again")
            with safe_open(str(self.path), "np") as handle:
                self._read[name] = handle.get_tensor(self.keys[name])
        return self._read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def _identity(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _projection(dim: int, rng: np.random.Generator) -> np.ndarray:
    """(D, Q) a Gaussian random projection with entries N(0, 1 / Q), Q = min(D, `PROJECTED`)
    (the identity when D is no wider)."""
    if dim <= PROJECTED:
        return np.eye(dim, dtype=np.float32)
    return (rng.normal(size=(dim, PROJECTED)) / np.sqrt(PROJECTED)).astype(np.float32)


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
    # the reduction is fitted on half the references and the other half are the domain classifier's
    # references: posts the reduction was fitted on lie closer to its span than any new post, and a
    # classifier would tell them apart by that alone (the demo's own test split read as shifted)
    basis, kept = (slice(0, None, 2), slice(1, None, 2)) if len(chosen) >= 4 else (slice(None), slice(None))
    reductions = {name: Reduction.fit(raw[name][basis]) for name in MODALITIES}
    refs = {name: reductions[name](raw[name][kept]) for name in MODALITIES}
    projections = {name: _projection(raw[name].shape[1], rng) for name in MODALITIES}

    def embed(name: str, x: np.ndarray) -> np.ndarray:
        return _normalised(x) @ projections[name]

    neighbours = {name: embed(name, raw[name]).astype(np.float16) for name in MODALITIES}
    scores, features = {}, {}
    if held is not None and len(held["text"]):
        how = f"{len(held['text'])} calibration posts (whole groups held out of training)"
        for name in MODALITIES:
            x = np.asarray(held[name], np.float32)
            features[name] = reductions[name](x)
            scores[name] = nearest_distances(neighbours[name], embed(name, x), NEIGHBOURS).mean(1)
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
                    scores[name][inside] = nearest_distances(others, embed(name, x[inside]), NEIGHBOURS).mean(
                        1
                    )
    else:
        return None
    return NoveltyIndex(
        reductions, refs, neighbours, projections, {k: np.sort(v) for k, v in scores.items()}, features, how
    )
