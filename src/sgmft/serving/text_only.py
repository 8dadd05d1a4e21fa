"""The labelled posts of a run's manifest that have no image: training leaves them out (features
and the model need both modalities), so none of them was trained on; ``sgmft evaluate`` scores
them here as ``predict`` answers them, from their text with the training mean of the image
features, and reports them apart from the test split."""

from __future__ import annotations

from typing import Any

import numpy as np

from sgmft.data.manifest import iter_manifest
from sgmft.metrics.classification import classification_metrics
from sgmft.metrics.intervals import wilson
from sgmft.serving.post_features import encoded
from sgmft.serving.predictor import Predictor


def text_only_scores(predictor: Predictor, batch: int = 256) -> dict[str, Any] | None:
    """Accuracy (with its 95 % interval) and macro-F1 of the run's answers on the labelled posts
    of its manifest without an image, or None when there are none. The manifest is read in
    blocks, as training read it (its image root, its labels)."""
    data = predictor.run.config.data
    labels = list(predictor.labels)
    truth: list[int] = []
    decided: list[int] = []
    for block in iter_manifest(data.manifest, data.image_root, labels, require_labels=False,
                               outside_root=data.allow_outside_root):
        posts = [p for p in block.posts if p.image is None and p.label in labels]
        for start in range(0, len(posts), batch):
            ready, features, _ = encoded(predictor, posts[start:start + batch])   # as `predict` encodes them
            if features is None:
                continue
            answers = predictor.predict_features(features, [p.id for p in ready])
            decided += [labels.index(a.best_guess or a.label) for a in answers]
            truth += [labels.index(p.label) for p in ready]
    if not truth:
        return None
    y_true, y_pred = np.asarray(truth), np.asarray(decided)
    scores = classification_metrics(y_true, y_pred, labels)
    right = int((y_true == y_pred).sum())
    low, high = wilson(right, len(truth))
    return {"posts": len(truth), "accuracy": scores["accuracy"], "accuracy_interval": [low, high],
            "macro_f1": scores["macro_f1"],
            "how": "posts without an image, never trained on, predicted from their text with the training "
                   "mean of the image features (as `predict` answers them)"}
