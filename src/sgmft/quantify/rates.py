"""The model's error rates, measured on posts held out from its training (a run's calibration
posts): what the adjusted methods (acc, pacc) correct for, and the training shares that EM
re-weights from."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Rates:
    """probs (m, K): the deployed model's probabilities of m held-out posts; labels (m,) their true
    classes; train_prior (K,): the label shares of the posts the model was trained on; units (m,)
    or None: each held-out post's unit (the event, user or image group it was held out with, as
    ints), which `sgmft.quantify.shift` treats as new groups."""

    probs: np.ndarray
    labels: np.ndarray
    train_prior: np.ndarray
    units: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.probs.ndim != 2 or len(self.probs) != len(self.labels):
            raise ValueError(
                f"rates: probabilities {self.probs.shape} and labels {self.labels.shape} disagree"
            )
        if self.units is not None and self.units.shape != self.labels.shape:
            raise ValueError(f"rates: units {self.units.shape} for {len(self.labels)} held-out posts")
        if self.train_prior.shape != (self.probs.shape[1],):
            raise ValueError(
                f"rates: training shares {self.train_prior.shape} for {self.probs.shape[1]} labels"
            )

    @property
    def k(self) -> int:
        return self.probs.shape[1]

    @cached_property
    def per_class(self) -> np.ndarray:
        """(K,) held-out posts of each class."""
        return np.bincount(self.labels, minlength=self.k).astype(np.float64)

    @cached_property
    def hard(self) -> np.ndarray:
        """(K, K) M[i, j] = P(the top label is i | the true label is j); a class without held-out
        posts gets the identity column (as QuaPy's ACC)."""
        return self._columns(np.eye(self.k)[self.probs.argmax(1)])

    @cached_property
    def soft(self) -> np.ndarray:
        """(K, K) M[i, j] = E[p_i | the true label is j] (as QuaPy's PACC)."""
        return self._columns(self.probs)

    def _columns(self, outputs: np.ndarray) -> np.ndarray:
        matrix = np.eye(self.k)
        for j in range(self.k):
            if self.per_class[j]:
                matrix[:, j] = outputs[self.labels == j].mean(0)
        return matrix

    def covariances(self, soft: bool) -> np.ndarray:
        """(K, K, K) C[j]: the covariance of one post's output (its top label as a one-hot
        vector, or its probabilities) given true label j: the spread that a group's count
        averages over."""
        outputs = self.probs if soft else np.eye(self.k)[self.probs.argmax(1)]
        matrix = self.soft if soft else self.hard
        cov = np.zeros((self.k, self.k, self.k))
        for j in range(self.k):
            if self.per_class[j] > 1:
                centred = outputs[self.labels == j] - matrix[:, j]
                cov[j] = centred.T @ centred / (self.per_class[j] - 1)
        return cov

    def without(self, rows: np.ndarray) -> Rates:
        """The rates measured without the held-out posts ``rows`` (a bool mask (m,) or indices)."""
        keep = np.ones(len(self.labels), bool)
        keep[rows] = False
        return Rates(self.probs[keep], self.labels[keep], self.train_prior,
                     None if self.units is None else self.units[keep])

    def informative(self) -> bool:
        """Whether every label has held-out posts (else its rates are the identity: unadjusted)."""
        return bool((self.per_class > 0).all())
