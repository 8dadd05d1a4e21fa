"""Unimodal probes and the decision-level fallback (beyond the paper), in one place: the module
the model carries, and how it is fitted.

Every model carries one linear classifier per modality on the frozen features (a *probe*),
fitted after training, never trained through the fused loss: what the text alone and the image
alone say, for the evidence of a prediction. With ``model.fallback`` the prediction is the
mixture

    p = w_fused softmax(fused) + w_text softmax(text probe) + w_image softmax(image probe)
        + w_prior prior

where *prior* is the training split's class frequencies: the part that holds when nothing else
does. The weights are chosen on out-of-fold predictions (`choose_mixture`), so that a fused head
that memorised the training images (and fails on new events) hands over to what carries over.
A post missing a modality gets that modality's probe weight spread over the rest
(`UnimodalProbes.mix`). Before fitting the weights are (1, 0, 0, 0): the fused head alone.

A probe is a multinomial logistic regression (scikit-learn) on one modality's frozen features;
its regularisation C and whether the features are z-scored first are chosen by out-of-fold
log-loss over the run's validation folds (`cross_fitted_probe`; by 3-fold cross-validation on
the training part when there are none, `fit_probe`), then it is refitted and folded into one
linear map (the z-scoring included).
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from torch import nn

from sgmft.metrics.calibration import log_loss, softmax

MODALITIES = ("text", "image")
#: the parts of the mixture, in the order of its weights
COMPONENTS = ("fused", "text", "image", "prior")


class UnimodalProbes(nn.Module):
    """Linear probes (buffers, not parameters: they are fitted, not trained), the class prior
    and the mixture weights.

    text (B, D_text), image (B, D_image) -> {"text": (B, C), "image": (B, C)} logits.
    """

    def __init__(self, text_dim: int, image_dim: int, num_classes: int):
        super().__init__()
        for name, dim in zip(MODALITIES, (text_dim, image_dim), strict=True):
            self.register_buffer(f"{name}_weight", torch.zeros(num_classes, dim))
            self.register_buffer(f"{name}_bias", torch.zeros(num_classes))
            self.register_buffer(f"{name}_mean", torch.zeros(dim))   # training mean: a missing modality
        self.register_buffer("prior", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("mixture", torch.tensor([1.0, 0.0, 0.0, 0.0]))   # COMPONENTS order
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def set_probe(self, name: str, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor) -> None:
        """Install a fitted probe: weight (C, D), bias (C,), and the training mean (D,) of the
        features it reads."""
        getattr(self, f"{name}_weight").copy_(weight)
        getattr(self, f"{name}_bias").copy_(bias)
        getattr(self, f"{name}_mean").copy_(mean)

    @torch.no_grad()
    def set_mixture(self, weights: tuple[float, ...], prior: torch.Tensor | None = None) -> None:
        """The mixture weights (fused, text, image, prior) and the class prior (C,)."""
        self.mixture.copy_(torch.tensor(weights, dtype=self.mixture.dtype))
        if prior is not None:
            self.prior.copy_(prior)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"text": text.float() @ self.text_weight.T + self.text_bias,
                "image": image.float() @ self.image_weight.T + self.image_bias}

    def mix(self, fused: torch.Tensor, probes: dict[str, torch.Tensor],
            present: torch.Tensor | None = None) -> torch.Tensor:
        """Log of the mixture of the class distributions: (B, C) log-probabilities.

        present: (B, 2) booleans, whether each post has its text and its image; a missing
        modality's probe gets no weight, and the weights left are renormalised (a post with
        neither is not a post). Default: both present.
        """
        stacked = torch.stack([torch.softmax(fused.float(), -1), torch.softmax(probes["text"], -1),
                               torch.softmax(probes["image"], -1), self.prior.expand_as(fused)])  # (4, B, C)
        weights = self.mixture.expand(fused.shape[0], -1)                                        # (B, 4)
        if present is not None:
            keep = torch.ones_like(weights)
            keep[:, 1:3] = present.to(weights.dtype)
            weights = weights * keep
            weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
        probs = torch.einsum("bm,mbc->bc", weights, stacked)
        return torch.log(probs.clamp_min(1e-12))


#: the probe candidates, C values per feature scaling: raw features (sentence embeddings are
#: already normalised; measured best on real data), or z-scored first (then only strong
#: regularisation pays: 1,280 z-scored CNN features overfit at C >= 0.1)
CANDIDATES = {False: (0.01, 0.1, 1.0), True: (0.001, 0.01)}
#: L-BFGS iterations per fit: enough on real data; on tiny, separable data more only grows weights
MAX_ITER = 300
#: rows used to choose a candidate (the final fit uses every training row)
SELECTION_ROWS = 20_000
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


def _fit_path(x: np.ndarray, y: np.ndarray, num_classes: int, cs: tuple[float, ...],
              standardise: bool, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight (C, D), bias (C,)) of a logistic regression on raw ``x`` for each C in ``cs``
    (ascending, warm-started along the path), with the z-scoring folded into the weights."""
    mean = x.mean(0) if standardise else np.zeros(x.shape[1])
    std = np.maximum(x.std(0), 1e-6) if standardise else np.ones(x.shape[1])
    z = (x - mean) / std
    model = LogisticRegression(max_iter=MAX_ITER, random_state=seed, warm_start=True)
    path = []
    for c in cs:
        model.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(z, y)
        coef, intercept = model.coef_, model.intercept_
        if len(model.classes_) == 2:          # scikit-learn's binary form: one row for class 1
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        weight = np.zeros((num_classes, x.shape[1]))
        bias = np.full(num_classes, ABSENT_CLASS_BIAS)
        weight[model.classes_] = coef / std
        bias[model.classes_] = intercept - (coef / std) @ mean
        path.append((weight, bias))
    return path


def _accuracy(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float(((x @ weight.T + bias).argmax(1) == y).mean())


def _subsample(x: np.ndarray, y: np.ndarray, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if len(y) <= rows:
        return x, y
    keep = np.sort(np.random.default_rng(seed).choice(len(y), rows, replace=False))
    return x[keep], y[keep]


def _scores(x: np.ndarray, y: np.ndarray, num_classes: int, cs: tuple[float, ...], standardise: bool,
            seed: int) -> list[float]:
    """3-fold cross-validated accuracy of each C."""
    counts = np.bincount(y)
    folds = int(min(3, counts[counts > 0].min()))
    if folds < 2:   # a class with one post: no fold can hold it out; judge on the training part
        return [_accuracy(w, b, x, y) for w, b in _fit_path(x, y, num_classes, cs, standardise, seed)]
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    per_fold = [[_accuracy(w, b, x[held], y[held])
                 for w, b in _fit_path(x[kept], y[kept], num_classes, cs, standardise, seed)]
                for kept, held in splitter.split(x, y)]
    return list(np.mean(per_fold, axis=0))


def fit_probe(x: np.ndarray, y: np.ndarray, num_classes: int, seed: int = 0) -> Probe:
    """The best candidate (by 3-fold cross-validated accuracy, ties to the first) fitted on
    ``x`` (N, D), ``y`` (N,) class indices: a probe for a run without validation folds, and the
    reference rows' logistic regressions."""
    x = np.asarray(x, np.float64)
    sx, sy = _subsample(x, y, SELECTION_ROWS, seed)
    found = [(score, standardise, c) for standardise, cs in CANDIDATES.items()
             for c, score in zip(cs, _scores(sx, sy, num_classes, cs, standardise, seed), strict=True)]
    score, standardise, c = max(found, key=lambda item: item[0])   # first of equals wins
    weight, bias = _fit_path(x, y, num_classes, (c,), standardise, seed)[0]
    return Probe(weight, bias, c, standardise, score)


def cross_fitted_probe(x: np.ndarray, y: np.ndarray, num_classes: int, fold: np.ndarray,
                       refit: np.ndarray, seed: int = 0) -> tuple[Probe, np.ndarray]:
    """The candidate with the lowest out-of-fold log-loss over the validation folds, refitted
    on the rows of ``refit``; and its out-of-fold logits.

    x (N, D), y (N,); fold (N,): each row's fold (0..K-1), -1 for rows kept in training in
    every fold; refit (N,) booleans. Returns the probe and the logits (N, C) of the rows with a
    fold (zeros elsewhere).
    """
    x = np.asarray(x, np.float64)
    folds = sorted(set(fold.tolist()) - {-1})
    candidates = [(standardise, c) for standardise, cs in CANDIDATES.items() for c in cs]
    oof = {candidate: np.zeros((len(y), num_classes)) for candidate in candidates}
    for k in folds:
        held, kept = fold == k, fold != k
        sx, sy = _subsample(x[kept], y[kept], SELECTION_ROWS, seed)
        for standardise, cs in CANDIDATES.items():
            for c, (w, b) in zip(cs, _fit_path(sx, sy, num_classes, cs, standardise, seed), strict=True):
                oof[(standardise, c)][held] = x[held] @ w.T + b
    rows = fold >= 0
    scores = {cand: log_loss(softmax(logits[rows]), y[rows]) for cand, logits in oof.items()}
    standardise, c = min(candidates, key=lambda cand: scores[cand])   # first of equals wins
    weight, bias = _fit_path(x[refit], y[refit], num_classes, (c,), standardise, seed)[0]
    return Probe(weight, bias, c, standardise, scores[(standardise, c)]), oof[(standardise, c)]


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
    for when no part holds.

    Returns the weights and a record: the chosen mixture's and each component's per-fold
    scores, pooled accuracy and log-loss.
    """
    best, best_key = None, None
    for weights in simplex_grid(step, len(components)):
        mixed = np.tensordot(np.asarray(weights), components, axes=1)
        per_fold = [s["log_loss"] for s in _fold_scores(mixed, labels, fold)]
        key = (round(max(per_fold), 9), round(float(np.mean(per_fold)), 9))
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


def _key(name: str, x: torch.Tensor, y: torch.Tensor, fold: np.ndarray, seed: int) -> tuple:
    """What a probe is a function of: the modality's features, the labels and the folds."""
    digest = hashlib.sha256()
    for part in (x.contiguous().numpy(), y.contiguous().numpy(), fold):
        digest.update(np.ascontiguousarray(part).tobytes())
        digest.update(b"|")
    return name, seed, digest.hexdigest()


def fit_unimodal_probes(model, train: dict[str, torch.Tensor], fold: np.ndarray | None = None,
                        refit: np.ndarray | None = None, seed: int = 0,
                        memo: dict | None = None) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Fit both probes of ``model`` on the training tensors and install them.

    fold: each training row's validation fold (-1: in training in every fold), or None without
    validation (then C is chosen by 3-fold cross-validation); refit: the rows the final probe is
    fitted on (default all). Returns what was chosen per modality, and the out-of-fold logits
    (N, C) per modality (empty without folds). ``memo`` keeps fitted probes for runs on the same
    data and folds.
    """
    num_classes = model.probes.text_bias.shape[0]
    memo = {} if memo is None else memo
    y = train["label"].numpy()
    refit = np.ones(len(y), bool) if refit is None else refit
    chosen, oof = {}, {}
    for name in MODALITIES:
        key = _key(name, train[name], train["label"], np.zeros(0) if fold is None else fold, seed)
        if key not in memo:
            x = train[name].double().numpy()
            memo[key] = (fit_probe(x[refit], y[refit], num_classes, seed=seed), None) if fold is None \
                else cross_fitted_probe(x, y, num_classes, fold, refit, seed)
        probe, logits = memo[key]
        model.probes.set_probe(name, torch.from_numpy(probe.weight).float(),
                               torch.from_numpy(probe.bias).float(),
                               train[name][torch.from_numpy(refit)].float().mean(0))
        how = "out_of_fold_log_loss" if fold is not None else "selection_accuracy"
        chosen[name] = {"C": probe.c, "standardise": probe.standardise, how: round(probe.score, 6)}
        if logits is not None:
            oof[name] = logits
    model.probes.fitted.fill_(True)
    return chosen, oof
