"""L2-regularised multinomial logistic regression fitted by L-BFGS on streamed batches.

The objective is scikit-learn's ``LogisticRegression(C=c)`` (lbfgs, multinomial): the summed
log-loss plus ||W||^2 / (2c), the intercept not penalised, the classes those ``y`` holds, and
for two classes the binary form (one row of weights). Here it is evaluated in float32 over
batches of rows that a function yields again for every evaluation, so the features are never
held at once: rows memory-mapped from the feature cache cost one batch of memory, whatever N.
The objective and its gradient are divided by N (the minimiser is the same). Measured against
scikit-learn (float64) in tests/models/test_logistic.py: probabilities within 2e-3.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]
#: L-BFGS iterations at most (scikit-learn's default is 100; 300 as the probes always had)
MAX_ITER = 300
#: stop when the largest gradient entry of the N-scaled objective is below this
TOLERANCE = 1e-5


@dataclass
class Standardise:
    """z = (x - mean) / std before the linear map (mean 0, std 1: raw features)."""

    mean: torch.Tensor     # (D,)
    std: torch.Tensor      # (D,)


def statistics(batches: Batches, dim: int) -> tuple[Standardise, int]:
    """The mean and standard deviation (float64 sums) of the rows, and how many there are."""
    count, total, squares = 0, torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)
    for x, _ in batches():
        x = x.double()
        count, total, squares = count + len(x), total + x.sum(0), squares + (x * x).sum(0)
    mean = total / max(count, 1)
    std = (squares / max(count, 1) - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return Standardise(mean.float(), std.float()), count


def fit_logistic(batches: Batches, n: int, dim: int, classes: torch.Tensor, c: float,
                 scale: Standardise | None = None,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (K, dim) and intercepts (K,) on the standardised features (``scale``; raw when
    None) for the K classes ``classes`` (sorted class indices present in the data, K >= 2).
    ``batches()`` yields (x (b, dim) float32, y (b,) class indices) over the n rows, anew for
    every evaluation; ``init`` warm-starts (the weights of another C, or of a subsample)."""
    binary = len(classes) == 2
    rows = 1 if binary else len(classes)
    weight = torch.zeros(rows, dim) if init is None else init[0][-rows:].clone()
    bias = torch.zeros(rows) if init is None else init[1][-rows:].clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    position = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long)
    position[classes] = torch.arange(len(classes))
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=MAX_ITER, max_eval=MAX_ITER * 5 // 4,
                                  tolerance_grad=TOLERANCE, tolerance_change=1e-10, history_size=10,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = 0.0
        for x, y in batches():
            z = x.float() if scale is None else (x.float() - scale.mean) / scale.std
            logits = z @ weight.T + bias
            target = position[y]
            loss = (F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), reduction="sum")
                    if binary else F.cross_entropy(logits, target, reduction="sum")) / n
            loss.backward()
            total += float(loss.detach())
        penalty = (weight * weight).sum() / (2 * c * n)
        penalty.backward()
        return torch.tensor(total + float(penalty.detach()))

    optimizer.step(closure)
    weight, bias = weight.detach(), bias.detach()
    if binary:   # one row for the second class: the first's is zero
        weight, bias = torch.cat([torch.zeros_like(weight), weight]), torch.cat([torch.zeros(1), bias])
    return weight, bias
