"""What a batch prediction learns about its shift from the training posts: the drift sample and
report (`<out>.drift.json`), and the density ratios that weight its prediction sets (`learn_shift`:
weighted split conformal, Tibshirani et al. 2019, learned from a sample of the batch before its
first record is written)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sgmft.data.manifest import Block
from sgmft.decision.drift import DOMAIN_ROWS, DriftSample, ShiftWeights, fit_shift_weights, id_keys
from sgmft.decision.novelty import MODALITIES
from sgmft.io import atomic_write, atomic_write_json
from sgmft.serving.post_features import cached, encoded
from sgmft.serving.predictor import Predictor

log = logging.getLogger(__name__)


def save_sample(path: Path, sample: DriftSample) -> None:
    """The batch's drift sample, atomically, for a resumed run."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **sample.state())

    atomic_write(path, write)


def drift_sample(predictor: Predictor, saved: Path | None) -> DriftSample | None:
    """The batch's drift sample: none for a run without a novelty index; on resume, the one the
    killed run saved."""
    if predictor.run.novelty is None:
        return None
    if saved is not None and saved.is_file():
        with np.load(saved) as state:
            return DriftSample.from_state(dict(state))
    return DriftSample()


def write_drift(predictor: Predictor, path: Path) -> dict[str, Any] | None:
    """``<out>.drift.json``: the batch's two-sample test per modality and its flagged shares
    (`sgmft.decision.drift.DriftSample.report`, its ``words`` the line the CLI prints); None
    without an index."""
    index = predictor.run.novelty
    if index is None or predictor.drift is None:
        return None
    if not predictor.drift.counts[0]:
        report = {"posts": 0, "note": "no post predicted here (on Ray the actors' posts are not sampled)"}
    else:
        report = predictor.drift.report(index, predictor.run.config.train.seed)
    atomic_write_json(path, report)
    return report


def learn_shift(predictor: Predictor, blocks: Callable[[], Iterator[Block]], caches: list,
                limit: int = DOMAIN_ROWS) -> ShiftWeights | None:
    """The density ratios of the batch against the run's calibration posts, learned from the
    posts whose id hashes lowest (at most ``limit``: a uniform sample, the same whatever the order
    or a resume): one read of the manifest for the ids, one for those posts' features (from a
    cache, else encoded). ``blocks()`` reads the manifest anew. None for a run without calibration
    posts or a novelty index, or a batch of fewer than two posts."""
    index = predictor.run.novelty
    if index is None or not predictor.run.conformal_posts():
        return None
    keys, ids = np.zeros(0, np.uint64), np.zeros(0, object)
    for block in blocks():
        block_ids = np.asarray([p.id for p in block.posts], object)
        keys, ids = np.concatenate([keys, id_keys(list(block_ids))]), np.concatenate([ids, block_ids])
        keep = np.argsort(keys, kind="stable")[:limit]
        keys, ids = keys[keep], ids[keep]
    if len(ids) < 2:
        return None
    chosen, parts = set(ids.tolist()), {name: [] for name in MODALITIES}
    for block in blocks():
        posts = [p for p in block.posts if p.id in chosen]
        order, features = cached(predictor, caches, posts)
        rest = [p for i, p in enumerate(posts) if i not in set(order)]
        found = [features] + [encoded(predictor, rest[i:i + predictor.batch_size])[1]
                              for i in range(0, len(rest), predictor.batch_size)]
        for part in (f for f in found if f is not None):
            for name in MODALITIES:
                parts[name].append(index.reduce(name, part.tensors[name].numpy()))
    sample = {name: np.concatenate(rows) for name, rows in parts.items() if rows}
    if len(sample) < len(MODALITIES) or len(sample["text"]) < 2:
        return None
    return fit_shift_weights(index, sample, predictor.run.config.train.seed)
