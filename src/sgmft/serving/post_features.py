"""Prediction records and the features of a block's posts: read from a feature cache when one
holds them (`cached`), else encoded here (`encoded`); what `sgmft.serving.batch` and the batch's
shift (`sgmft.serving.batch_shift`) share."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sgmft.data.images import ImageError, load_image
from sgmft.data.manifest import Post, RowProblem
from sgmft.encoders.cache import FeatureCache
from sgmft.serving.predictor import Features, PostInput, PredictionError, Predictor


def record(post_id: str | None, row: int, **fields: Any) -> dict[str, Any]:
    return {"id": post_id, "row": row, **fields}


def error_record(post: Post | RowProblem, message: str) -> dict[str, Any]:
    """The error record of a post or a bad row (both know their id, row, user and label)."""
    return record(post.id, post.row, user=post.user, true_label=post.label, error=message)


def cached(predictor: Predictor, caches: list[FeatureCache], posts: list[Post]
            ) -> tuple[list[int], Features | None]:
    """The positions in ``posts`` whose features a cache holds, and those features (gathered
    from each cache in one read)."""
    left = list(range(len(posts)))
    parts: list[tuple[list[int], FeatureCache, np.ndarray]] = []
    for cache in caches:
        held_rows = cache.holding([posts[i] for i in left]) if cache.digests is not None else \
            [cache.index.get(posts[i].id) for i in left]
        rows = list(zip(left, held_rows, strict=True))
        held = [(i, row) for i, row in rows if row is not None]
        if held:
            parts.append(([i for i, _ in held], cache, np.asarray([row for _, row in held])))
        left = [i for i, row in rows if row is None]
    if not parts:
        return [], None
    keys = ("text", "image", "text_tokens", "image_tokens") if predictor.sequence else ("text", "image")
    order = [i for positions, _, _ in parts for i in positions]
    features = {key: torch.from_numpy(np.concatenate([getattr(cache, key)[rows] for _, cache, rows in parts]))
                for key in keys}
    features["tokens"] = predictor.run.vocab.encode([posts[i].tokens for i in order],
                                                    predictor.run.config.model.max_tokens)
    return order, Features(features, [True] * len(order), [True] * len(order), [[] for _ in order])


def encoded(predictor: Predictor, posts: list[Post]) -> tuple[list[Post], Features | None, list[dict]]:
    """Features of posts encoded here (a text-only post with the training mean of the image
    features); a post whose image fails, or that cannot be encoded (a run on imported
    features), gets an error record instead."""
    inputs, ready, errors = [], [], []
    for post in posts:
        try:
            image = None if post.image is None else load_image(post.image)
            inputs.append(PostInput(post.text, image, post.id))
            ready.append(post)
        except ImageError as exc:
            errors.append(error_record(post, str(exc)))
    if not inputs:
        return [], None, errors
    try:
        return ready, predictor.encode(inputs), errors
    except PredictionError as exc:
        return [], None, errors + [error_record(p, str(exc)) for p in ready]
