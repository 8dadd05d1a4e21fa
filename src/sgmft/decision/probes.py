"""Fitting the unimodal probes: a logistic regression per modality on its frozen features,
its regularisation C and scaling chosen on held-out rows, refitted and folded into one linear
map (the z-scoring included) that the model carries (`sgmft.models.fallback.UnimodalProbes`).

Every run starts from `DEFAULT`; with validation folds the candidate with the lowest out-of-fold
log-loss replaces it when its gain is earned on the held-out groups (`cross_fitted_probe`,
`sgmft.decision.earned`). The reference rows' logistic regressions choose by 3-fold
cross-validated accuracy (`fit_probe`).
Candidates are compared on at most `SELECTION_ROWS` rows of each fold's training part, held in
memory; the final fit reads every refit row in batches (`sgmft.decision.logistic`), so features
memory-mapped from the cache are never loaded whole, and a probe of ten million posts costs the
memory of one batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sgmft.decision.earned import Units, judge_log_loss
from sgmft.decision.logistic import Batches, Standardise, fit_logistic, statistics
from sgmft.metrics.calibration import log_loss, softmax
from sgmft.models.fallback import MODALITIES

#: the probe candidates, C values per feature scaling: raw features (sentence embeddings are
#: already normalised), or z-scored first
CANDIDATES = {False: (0.01, 0.1, 1.0), True: (0.001, 0.01, 1.0)}
#: the probe every run starts from (z-scored features, C = 1: scikit-learn's default after a
#: StandardScaler); another candidate replaces it only when its out-of-fold gain is earned
#: (`sgmft.decision.earned`). Measured on kept-back MediaEval events: 62-63 % where the
#: candidate chosen on 725 out-of-fold posts of one informative event scored 44.5 %
DEFAULT = (True, 1.0)
#: rows used to choose a candidate (the final fit uses every training row)
SELECTION_ROWS = 20_000
#: rows read at once by the final fit and by out-of-fold predictions
STREAM_ROWS = 8192
#: the bias given to a class the training part never shows (probability about e^-30)
ABSENT_CLASS_BIAS = -30.0


@dataclass(frozen=True)
class Probe:
    """A fitted linear probe: logits = x @ weight.T + bias."""

    weight: np.ndarray   # (C, D)
    bias: np.ndarray     # (C,)
    c: float
    standardise: bool
    score: float         # how it was chosen: out-of-fold log-loss, or cross-validated accuracy

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias


def gather(x, index: np.ndarray) -> torch.Tensor:
    """Rows ``index`` of ``x`` ((N, D): a NumPy array, a tensor or memory-mapped `Rows`) as a
    float32 tensor."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x[index], dtype=np.float32))
    return x[torch.from_numpy(np.asarray(index, dtype=np.int64))].float()


def streamed(x, y: np.ndarray, index: np.ndarray, size: int = STREAM_ROWS) -> Batches:
    """A function yielding (x, y) batches of the rows ``index``, anew at each call."""
    def run():
        for start in range(0, len(index), size):
            part = index[start:start + size]
            yield gather(x, part), torch.from_numpy(np.asarray(y[part], dtype=np.int64))
    return run


def _folded(weight: torch.Tensor, bias: torch.Tensor, scale: Standardise | None, classes: np.ndarray,
            num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights on standardised features of the present ``classes`` -> (C, D), (C,) on raw ones."""
    dim = weight.shape[1]
    if scale is not None:
        weight = weight / scale.std
        bias = bias - weight @ scale.mean
    full_weight = np.zeros((num_classes, dim), np.float32)
    full_bias = np.full(num_classes, ABSENT_CLASS_BIAS, np.float32)
    full_weight[classes] = weight.numpy()
    full_bias[classes] = bias.numpy()
    return full_weight, full_bias


def _fit(batches: Batches, n: int, dim: int, classes: np.ndarray, num_classes: int, c: float,
         scale: Standardise | None, init=None) -> tuple[np.ndarray, np.ndarray, tuple]:
    """One fit: (weight (C, D), bias (C,)) on raw features, and the solver's own weights (a warm
    start for the next C)."""
    if len(classes) < 2:   # one class: it is certain
        weight, bias = np.zeros((num_classes, dim), np.float32), np.full(num_classes, ABSENT_CLASS_BIAS,
                                                                           np.float32)
        bias[classes] = 0.0
        return weight, bias, None
    solved = fit_logistic(batches, n, dim, torch.from_numpy(classes), c, scale, init)
    return (*_folded(*solved, scale, classes, num_classes), solved)


def _path(x: torch.Tensor, y: np.ndarray, num_classes: int, cs: tuple[float, ...],
          standardise: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) for each C of ``cs`` (ascending, warm-started along the path) on rows
    held in memory, x (n, D) float32."""
    batches = streamed(x, y, np.arange(len(y)), size=max(1, len(y)))
    scale = statistics(batches, x.shape[1])[0] if standardise else None
    classes = np.unique(y)
    found, init = [], None
    for c in cs:
        weight, bias, init = _fit(batches, len(y), x.shape[1], classes, num_classes, c, scale, init)
        found.append((weight, bias))
    return found


def refit(x, y: np.ndarray, index: np.ndarray, num_classes: int, c: float, standardise: bool,
          seed: int = 0) -> tuple:
    """The final fit on the rows ``index``, read in batches: (weight (C, D), bias (C,)). Beyond
    `SELECTION_ROWS` rows it starts from the fit on a subsample of them (held in memory, same
    scaling), so the passes over every row are few."""
    dim, classes = x.shape[1], np.unique(y[index])
    batches = streamed(x, y, index)
    scale = statistics(batches, dim)[0] if standardise else None
    init = None
    if len(index) > SELECTION_ROWS:
        chosen = _subsample(index, SELECTION_ROWS, seed)
        if np.array_equal(np.unique(y[chosen]), classes):
            subsample = streamed(gather(x, chosen), y[chosen], np.arange(len(chosen)), size=len(chosen))
            init = _fit(subsample, len(chosen), dim, classes, num_classes, c, scale)[2]
    weight, bias, _ = _fit(batches, len(index), dim, classes, num_classes, c, scale, init)
    return weight, bias


def _accuracy(weight: np.ndarray, bias: np.ndarray, x: torch.Tensor, y: np.ndarray) -> float:
    return float(((x.numpy() @ weight.T + bias).argmax(1) == y).mean())


def _subsample(index: np.ndarray, rows: int, seed: int) -> np.ndarray:
    if len(index) <= rows:
        return index
    return np.sort(np.random.default_rng(seed).choice(index, rows, replace=False))


def _scores(x: torch.Tensor, y: np.ndarray, num_classes: int, cs: tuple[float, ...], standardise: bool,
            seed: int) -> list[float]:
    """3-fold cross-validated accuracy of each C (rows in memory)."""
    from sklearn.model_selection import StratifiedKFold  # here: scikit-learn takes seconds to import

    counts = np.bincount(y)
    folds = int(min(3, counts[counts > 0].min()))
    if folds < 2:   # a class with one post: no fold can hold it out; judge on the training part
        return [_accuracy(w, b, x, y) for w, b in _path(x, y, num_classes, cs, standardise)]
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    per_fold = [[_accuracy(w, b, x[held], y[held])
                 for w, b in _path(x[kept], y[kept], num_classes, cs, standardise)]
                for kept, held in splitter.split(np.zeros(len(y)), y)]
    return list(np.mean(per_fold, axis=0))


def fit_probe(x, y: np.ndarray, num_classes: int, seed: int = 0) -> Probe:
    """The best candidate (by 3-fold cross-validated accuracy on at most `SELECTION_ROWS` rows,
    ties to the first) fitted on every row of ``x`` (N, D) (array, tensor or `Rows`), ``y`` (N,)
    class indices: a probe for a run without validation folds, and the reference rows'
    logistic regressions."""
    y = np.asarray(y)
    chosen = _subsample(np.arange(len(y)), SELECTION_ROWS, seed)
    sx, sy = gather(x, chosen), y[chosen]
    found = [(score, standardise, c) for standardise, cs in CANDIDATES.items()
             for c, score in zip(cs, _scores(sx, sy, num_classes, cs, standardise, seed), strict=True)]
    score, standardise, c = max(found, key=lambda item: item[0])   # first of equals wins
    weight, bias = refit(x, y, np.arange(len(y)), num_classes, c, standardise, seed)
    return Probe(weight, bias, c, standardise, score)


def _held_logits(x, index: np.ndarray, fitted: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Logits (n, C) of the rows ``index`` under each fitted (weight, bias), read in batches."""
    out = [np.zeros((len(index), len(b))) for _, b in fitted]
    for start in range(0, len(index), STREAM_ROWS):
        rows = gather(x, index[start:start + STREAM_ROWS]).numpy()
        for logits, (weight, bias) in zip(out, fitted, strict=True):
            logits[start:start + len(rows)] = rows @ weight.T + bias
    return out


def cross_fitted_probe(x, y: np.ndarray, num_classes: int, fold: np.ndarray, refit_rows: np.ndarray,
                       units: Units, seed: int = 0) -> tuple[Probe, np.ndarray, dict[str, Any]]:
    """The candidate with the lowest out-of-fold log-loss over the validation folds when its gain
    over `DEFAULT` is earned on the held-out ``units`` (`sgmft.decision.earned`), else the
    default; refitted on the rows of ``refit_rows``; its out-of-fold logits; and the record.

    x (N, D) (array, tensor or `Rows`), y (N,); fold (N,): each row's fold (0..K-1), -1 for rows
    kept in training in every fold; refit_rows (N,) booleans; units: the validated rows'
    bootstrap units. Returns the probe, the logits (N, C) of the rows with a fold (zeros
    elsewhere) and what was earned.
    """
    y = np.asarray(y)
    folds = sorted(set(fold.tolist()) - {-1})
    candidates = [(standardise, c) for standardise, cs in CANDIDATES.items() for c in cs]
    oof = {candidate: np.zeros((len(y), num_classes)) for candidate in candidates}
    for k in folds:
        held = np.nonzero(fold == k)[0]
        chosen = _subsample(np.nonzero(fold != k)[0], SELECTION_ROWS, seed)
        sx, sy = gather(x, chosen), y[chosen]
        fitted = [fit for standardise, cs in CANDIDATES.items()
                  for fit in _path(sx, sy, num_classes, cs, standardise)]
        for candidate, logits in zip(candidates, _held_logits(x, held, fitted), strict=True):
            oof[candidate][held] = logits
    rows = fold >= 0
    probs = {cand: softmax(logits[rows]) for cand, logits in oof.items()}
    scores = {cand: log_loss(p, y[rows]) for cand, p in probs.items()}
    best = min(candidates, key=lambda cand: scores[cand])   # first of equals wins
    earned = judge_log_loss("probe", list(DEFAULT), list(best), probs[DEFAULT], probs[best], y[rows], units,
                            seed)
    standardise, c = earned.choice
    weight, bias = refit(x, y, np.nonzero(refit_rows)[0], num_classes, c, standardise, seed)
    probe = Probe(weight, bias, c, standardise, scores[(standardise, c)])
    return probe, oof[(standardise, c)], earned.record()


def default_probe(x, y: np.ndarray, num_classes: int, seed: int = 0) -> Probe:
    """`DEFAULT` fitted on every row: the probe of a run without validation folds."""
    standardise, c = DEFAULT
    weight, bias = refit(x, y, np.arange(len(y)), num_classes, c, standardise, seed)
    return Probe(weight, bias, c, standardise, float("nan"))


def _fingerprint(value) -> bytes:
    """What identifies a modality's features: the cache's chunks and the rows of a `Rows`, the
    bytes of a tensor."""
    source = getattr(value, "source", None)
    if source is not None:
        paths = getattr(source, "paths", None)
        where = f"{paths[0].parent}:{source.key}" if paths else str(id(source))
        return where.encode() + np.ascontiguousarray(value.rows).tobytes()
    return np.ascontiguousarray(value.contiguous().numpy()).tobytes()


def _key(name: str, x, y: torch.Tensor, fold: np.ndarray, units: np.ndarray, seed: int) -> tuple:
    """What a probe is a function of: the modality's features, the labels, the folds and units."""
    digest = hashlib.sha256()
    for part in (_fingerprint(x), y.contiguous().numpy().tobytes(), np.ascontiguousarray(fold).tobytes(),
                 np.ascontiguousarray(units).tobytes()):
        digest.update(part)
        digest.update(b"|")
    return name, seed, digest.hexdigest()


def _take(x, index: np.ndarray):
    """Rows ``index`` of ``x``: a view of `Rows`, a copy of an array or tensor."""
    return x.take(index) if hasattr(x, "take") and not isinstance(x, np.ndarray | torch.Tensor) else x[index]


def _mean(x, index: np.ndarray) -> torch.Tensor:
    """The mean (D,) of the rows ``index``, read in batches."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for start in range(0, len(index), STREAM_ROWS):
        total += gather(x, index[start:start + STREAM_ROWS]).double().sum(0)
    return (total / max(1, len(index))).float()


def fit_unimodal_probes(model, train: dict[str, Any], fold: np.ndarray | None = None,
                        refit_rows: np.ndarray | None = None, units: Units | None = None, seed: int = 0,
                        memo: dict | None = None) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Fit both probes of ``model`` on the training tensors (features as tensors or `Rows`)
    and install them.

    fold: each training row's validation fold (-1: in training in every fold), or None without
    validation (then the probe is `DEFAULT`); refit_rows: the rows the final probe is fitted on
    (default all); units: the validated rows' bootstrap units (with ``fold``). Returns what was
    chosen per modality (and whether it was earned), and the out-of-fold logits (N, C) per
    modality (empty without folds). ``memo`` keeps fitted probes for runs on the same data and
    folds.
    """
    num_classes = model.probes.text_bias.shape[0]
    memo = {} if memo is None else memo
    y = train["label"].numpy()
    refit_rows = np.ones(len(y), bool) if refit_rows is None else refit_rows
    if fold is not None and units is None:      # no groups named: every validated post is its own unit
        held = int((np.asarray(fold) >= 0).sum())
        units = Units(np.arange(held), held, "each validated post")
    chosen, oof = {}, {}
    for name in MODALITIES:
        x = train[name]
        key = _key(name, x, train["label"], np.zeros(0) if fold is None else fold,
                   np.zeros(0) if units is None else units.unit, seed)
        if key not in memo and fold is None:
            index = np.nonzero(refit_rows)[0]
            memo[key] = default_probe(_take(x, index), y[index], num_classes, seed=seed), None, None
        elif key not in memo:
            memo[key] = cross_fitted_probe(x, y, num_classes, fold, refit_rows, units, seed)
        probe, logits, earned = memo[key]
        model.probes.set_probe(name, torch.from_numpy(probe.weight), torch.from_numpy(probe.bias),
                               _mean(x, np.nonzero(refit_rows)[0]))
        chosen[name] = {"C": probe.c, "standardise": probe.standardise}
        if earned is not None:
            chosen[name] |= {"out_of_fold_log_loss": round(probe.score, 6), "earned": earned}
        else:
            chosen[name]["how"] = "the default: no validation folds to earn another"
        if logits is not None:
            oof[name] = logits
    model.probes.fitted.fill_(True)
    return chosen, oof
