"""Reference rows for every table: results that need no neural network and cannot be argued
with. The majority class of the training split, and logistic regressions on the frozen
features (text and image concatenated, and each alone), with their regularisation chosen by
3-fold cross-validation on the training split, as the unimodal probes are; the test split is
only scored."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from sgmft.decision.probes import fit_probe
from sgmft.metrics.classification import classification_metrics
from sgmft.training.prepare import PreparedData

#: row label -> which features the logistic regression reads
FEATURES = {
    "logistic regression, text + image features": ("text", "image"),
    "logistic regression, text features": ("text",),
    "logistic regression, image features": ("image",),
}


def _features(prepared: PreparedData, ids: list[str], names: tuple[str, ...]) -> np.ndarray:
    rows = prepared.cache.rows(ids)
    return np.concatenate([getattr(prepared.cache, name)[rows] for name in names], axis=1)


def reference_scores(prepared: PreparedData, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Row label -> {"accuracy", "macro_f1", ...} on the test split (deterministic: no seeds)."""
    labels = list(prepared.manifest.labels)
    index = {label: i for i, label in enumerate(labels)}
    label_of = prepared.manifest.by_id("label")
    train, test = prepared.split["train"], prepared.split["test"]
    y_train = np.asarray([index[label_of[i]] for i in train])
    y_test = np.asarray([index[label_of[i]] for i in test])
    majority = Counter(y_train.tolist()).most_common(1)[0][0]
    scores = {"majority class": classification_metrics(y_test, np.full_like(y_test, majority), labels)}
    for row, names in FEATURES.items():
        probe = fit_probe(_features(prepared, train, names), y_train, len(labels), seed=seed)
        predicted = probe.logits(_features(prepared, test, names).astype(np.float64)).argmax(1)
        scores[row] = classification_metrics(y_test, predicted, labels) | {"C": probe.c,
                                                                           "standardise": probe.standardise}
    return scores
