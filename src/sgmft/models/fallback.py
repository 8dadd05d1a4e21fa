"""Unimodal probes and the decision-level fallback (beyond the paper).

Every model carries one linear classifier per modality on the frozen features, fitted on the
training split after training (below), never trained through the fused loss:
what the text alone and the image alone say, for the evidence of a prediction. With
``model.fallback`` the prediction is the mixture

    p = w_fused * softmax(fused logits) + w_text * softmax(text probe) + w_image * softmax(image probe)

with the weights chosen on the validation part, so that a fused head that memorised the
training images (and fails on new events) can hand over to the modality that generalises.
Before calibration the weights are (1, 0, 0): the fused head alone.

Fitting (here too, so the fallback has one home): a probe is a multinomial logistic regression
(scikit-learn) on one modality's frozen features; its regularisation C and whether the features
are z-scored first are chosen on the validation part (or by 3-fold cross-validation on the
training part when there is none), then it is refitted on the training part and folded into one
linear map (the z-scoring included).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from torch import nn

MODALITIES = ("text", "image")


class UnimodalProbes(nn.Module):
    """Linear probes (buffers, not parameters: they are fitted, not trained) and the mixture.

    text (B, D_text), image (B, D_image) -> {"text": (B, C), "image": (B, C)} logits.
    """

    def __init__(self, text_dim: int, image_dim: int, num_classes: int):
        super().__init__()
        for name, dim in zip(MODALITIES, (text_dim, image_dim), strict=True):
            self.register_buffer(f"{name}_weight", torch.zeros(num_classes, dim))
            self.register_buffer(f"{name}_bias", torch.zeros(num_classes))
            self.register_buffer(f"{name}_mean", torch.zeros(dim))   # training mean: a missing modality
        self.register_buffer("mixture", torch.tensor([1.0, 0.0, 0.0]))   # fused, text, image
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def set_probe(self, name: str, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor) -> None:
        """Install a fitted probe: weight (C, D), bias (C,), and the training mean (D,) of the
        features it reads."""
        getattr(self, f"{name}_weight").copy_(weight)
        getattr(self, f"{name}_bias").copy_(bias)
        getattr(self, f"{name}_mean").copy_(mean)

    @torch.no_grad()
    def set_mixture(self, weights: tuple[float, float, float]) -> None:
        self.mixture.copy_(torch.tensor(weights, dtype=self.mixture.dtype))

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"text": text.float() @ self.text_weight.T + self.text_bias,
                "image": image.float() @ self.image_weight.T + self.image_bias}

    def mix(self, fused: torch.Tensor, probes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Log of the mixture of the three class distributions: (B, C) log-probabilities."""
        stacked = torch.stack([fused, probes["text"], probes["image"]])       # (3, B, C)
        probs = (self.mixture[:, None, None] * torch.softmax(stacked, dim=-1)).sum(0)
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
    score: float         # accuracy on validation (or cross-validated) that chose it

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
            seed: int, x_val: np.ndarray | None, y_val: np.ndarray | None) -> list[float]:
    """Validation accuracy of each C, or 3-fold cross-validated accuracy without validation."""
    if x_val is not None and y_val is not None and len(y_val):
        return [_accuracy(w, b, x_val, y_val) for w, b in _fit_path(x, y, num_classes, cs, standardise, seed)]
    counts = np.bincount(y)
    folds = int(min(3, counts[counts > 0].min()))
    if folds < 2:   # a class with one post: no fold can hold it out; judge on the training part
        return [_accuracy(w, b, x, y) for w, b in _fit_path(x, y, num_classes, cs, standardise, seed)]
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    per_fold = [[_accuracy(w, b, x[held], y[held])
                 for w, b in _fit_path(x[kept], y[kept], num_classes, cs, standardise, seed)]
                for kept, held in splitter.split(x, y)]
    return list(np.mean(per_fold, axis=0))


def fit_probe(x: np.ndarray, y: np.ndarray, num_classes: int, x_val: np.ndarray | None = None,
              y_val: np.ndarray | None = None, seed: int = 0) -> Probe:
    """The best candidate (by validation accuracy, ties to the first) fitted on ``x``.

    x (N, D), y (N,) class indices; x_val, y_val the validation part, if any.
    """
    x, x_val = np.asarray(x, np.float64), None if x_val is None else np.asarray(x_val, np.float64)
    sx, sy = _subsample(x, y, SELECTION_ROWS, seed)
    found = [(score, standardise, c) for standardise, cs in CANDIDATES.items()
             for c, score in zip(cs, _scores(sx, sy, num_classes, cs, standardise, seed, x_val, y_val),
                                 strict=True)]
    score, standardise, c = max(found, key=lambda item: item[0])   # first of equals wins
    weight, bias = _fit_path(x, y, num_classes, (c,), standardise, seed)[0]
    return Probe(weight, bias, c, standardise, score)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def simplex_grid(step: float = 0.1) -> list[tuple[float, float, float]]:
    """Every (w_fused, w_text, w_image) >= 0 summing to 1 on a grid of ``step``, fused first."""
    n = round(1 / step)
    return [(a / n, b / n, (n - a - b) / n) for a in range(n, -1, -1) for b in range(n - a, -1, -1)]


def choose_mixture(fused: np.ndarray, text: np.ndarray, image: np.ndarray, labels: np.ndarray,
                   step: float = 0.1) -> tuple[tuple[float, float, float], dict[str, float]]:
    """The mixture weights with the lowest validation log-loss; ties go to the higher accuracy,
    then to more weight on the fused head. Inputs are logits (N, C); labels (N,).

    Log-loss, not accuracy: on a small validation part accuracy moves by whole posts, and a
    component that is confidently wrong on new groups (the image of an unseen event) can win a
    post by chance while its log-loss shows it failing (measured on the shifted demo set:
    text alone 0.81, text 0.6 + image 0.4 1.14, though the latter had one more right post).

    Returns the weights and a record of the validation accuracy of the choice and of each
    component alone.
    """
    probs = np.stack([_softmax(fused), _softmax(text), _softmax(image)])       # (3, N, C)
    best, best_key = (1.0, 0.0, 0.0), None
    for weights in simplex_grid(step):
        mixed = np.tensordot(np.asarray(weights), probs, axes=1)
        nll = -np.log(np.maximum(mixed[np.arange(len(labels)), labels], 1e-12)).mean()
        key = (-round(float(nll), 9), float((mixed.argmax(1) == labels).mean()))   # ties are ties
        if best_key is None or key > best_key:
            best, best_key = weights, key
    alone = {name: float((p.argmax(1) == labels).mean())
             for name, p in zip(("fused", "text", "image"), probs, strict=True)}
    return best, {"accuracy": best_key[1], "log_loss": -best_key[0],
                  **{f"{k}_accuracy": v for k, v in alone.items()}}


def _key(name: str, train: dict[str, torch.Tensor], val: dict[str, torch.Tensor] | None,
         seed: int) -> tuple:
    """What a probe is a function of: the modality's features and labels on both parts."""
    digest = hashlib.sha256()
    for part in (train, val or {}):
        for key in (name, "label"):
            if key in part:
                digest.update(part[key].contiguous().numpy().tobytes())
        digest.update(b"|")
    return name, seed, digest.hexdigest()


def fit_unimodal_probes(model, train: dict[str, torch.Tensor], val: dict[str, torch.Tensor] | None,
                        seed: int = 0, memo: dict | None = None) -> dict[str, dict[str, float]]:
    """Fit both probes of ``model`` on the training tensors (choosing on ``val``); returns
    what was chosen, per modality. ``memo`` keeps fitted probes for runs on the same data."""
    num_classes = model.probes.text_bias.shape[0]
    memo = {} if memo is None else memo
    chosen = {}
    for name in ("text", "image"):
        key = _key(name, train, val, seed)
        if key not in memo:
            x, y = train[name].double().numpy(), train["label"].numpy()
            x_val = val[name].double().numpy() if val is not None else None
            y_val = val["label"].numpy() if val is not None else None
            memo[key] = fit_probe(x, y, num_classes, x_val, y_val, seed)
        probe = memo[key]
        model.probes.set_probe(name, torch.from_numpy(probe.weight).float(),
                               torch.from_numpy(probe.bias).float(), train[name].float().mean(0))
        chosen[name] = {"C": probe.c, "standardise": probe.standardise,
                        "selection_accuracy": round(probe.score, 6)}
    model.probes.fitted.fill_(True)
    return chosen
