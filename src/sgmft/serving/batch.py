"""Batch prediction over a manifest (JSONL or CSV out).

Features come from the manifest's feature cache when one of the run's encoder matches the
manifest (same posts, same cleaned texts, same image bytes), so a manifest that was trained or
evaluated on is not encoded again; otherwise the posts are encoded in batches.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgmft.data.images import ImageError, load_image
from sgmft.data.manifest import Manifest, Post, load_manifest, skipped_summary
from sgmft.encoders.cache import FeatureCache
from sgmft.encoders.features import find_cache
from sgmft.io import atomic_write_bytes
from sgmft.progress import progress_bar
from sgmft.serving.predictor import Features, PostInput, PredictionError, Predictor

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """One record per row in row order (a prediction, or ``error``), and what was skipped."""

    records: list[dict[str, Any]]
    skipped: dict[str, Any]
    from_cache: bool


def _record(post_id: str | None, row: int, **fields: Any) -> dict[str, Any]:
    return {"id": post_id, "row": row, **fields}


def _cached_features(predictor: Predictor, manifest: Manifest) -> FeatureCache | None:
    data = predictor.run.config.data
    own = Path(predictor.run.info["features"]["folder"])
    cache = find_cache(manifest, data.encoder, data.checkpoint, predictor.sequence, (own,))
    if cache is not None:
        log.info("features of %d posts from the feature cache %s", len(cache), cache.header["manifest"])
    return cache


def _from_cache(predictor: Predictor, cache: FeatureCache, posts: list[Post]) -> Features:
    rows = cache.rows([p.id for p in posts])
    tensors = {"text": torch.from_numpy(np.ascontiguousarray(cache.text[rows])),
               "image": torch.from_numpy(np.ascontiguousarray(cache.image[rows])),
               "tokens": predictor.run.vocab.encode([p.tokens for p in posts],
                                                    predictor.run.config.model.max_tokens)}
    if predictor.sequence:
        tensors["text_tokens"] = torch.from_numpy(np.ascontiguousarray(cache.text_tokens[rows]))
        tensors["image_tokens"] = torch.from_numpy(np.ascontiguousarray(cache.image_tokens[rows]))
    return Features(tensors, [True] * len(posts), [True] * len(posts), [[] for _ in posts])


def _batches(predictor: Predictor, posts: list[Post], cache: FeatureCache | None, batch_size: int
             ) -> Iterator[tuple[list[Post], Features | None, list[dict[str, Any]]]]:
    """(posts, their features, error records) per batch; a post whose image fails to load
    gets an error record instead of features."""
    for start in range(0, len(posts), batch_size):
        chunk = posts[start:start + batch_size]
        if cache is not None:
            yield chunk, _from_cache(predictor, cache, chunk), []
            continue
        inputs, ready, errors = [], [], []
        for post in chunk:
            try:
                inputs.append(PostInput(post.text, load_image(post.image), post.id))
                ready.append(post)
            except ImageError as exc:
                errors.append(_record(post.id, post.row, user=post.user, true_label=post.label,
                                      error=str(exc)))
        try:
            yield ready, predictor.encode(inputs) if inputs else None, errors
        except PredictionError as exc:  # a post with neither usable text nor image
            yield [], None, errors + [_record(p.id, p.row, user=p.user, true_label=p.label, error=str(exc))
                                      for p in ready]


def predict_manifest(predictor: Predictor, manifest_path: str | Path,
                     image_root: str | Path | None = None, batch_size: int = 64,
                     labels: list[str] | None = None, skip_invalid: bool = False,
                     progress: bool = True, coverage: float | None = None,
                     min_confidence: float | None = None) -> BatchResult:
    """Predict every valid row of a manifest; a bad row gets an ``error`` record with its id,
    user and label as far as the row had them (or, with ``skip_invalid``, is left out and
    counted). Never stops at a bad row.

    Records carry the post's true label (``true_label``) when the manifest has one, and
    ``split`` (train, val or test) when the run was trained on the post; with ``coverage`` the
    prediction set, with ``min_confidence`` "unsure" below it.
    """
    predictor.set_threshold(coverage)   # a run that cannot give sets says so before any work
    manifest = load_manifest(manifest_path, image_root, labels or predictor.labels,
                             require_labels=False, skip_invalid=True, any_label=True)
    skipped = skipped_summary(manifest)
    records = [] if skip_invalid else [_record(p.id, p.row, user=p.user, true_label=p.label, error=p.problem)
                                       for p in manifest.skipped]
    in_split = predictor.run.part_of()
    cache = _cached_features(predictor, manifest)
    bar = progress_bar(len(manifest.posts), "predict", "post", disable=not progress)
    for posts, features, errors in _batches(predictor, manifest.posts, cache, batch_size):
        records += errors
        predictions = predictor.predict_features(features, [p.id for p in posts], coverage,
                                                 min_confidence) if features else []
        for post, prediction in zip(posts, predictions, strict=True):
            records.append(_record(post.id, post.row, user=post.user, true_label=post.label,
                                   split=in_split.get(post.id), **prediction.to_dict()))
        bar.update(len(posts) + len(errors))
    bar.close()
    return BatchResult(sorted(records, key=lambda r: r["row"]), skipped, cache is not None)


#: the output formats of `write_predictions`, by file extension
FORMATS = (".jsonl", ".json", ".csv")


def write_predictions(records: list[dict[str, Any]], out: str | Path, labels: list[str]) -> None:
    """By the file's extension: JSONL (a record per line), JSON (one array of the records) or
    CSV (id, row, user, split, true_label, label, one probability column per label, text_only,
    image_only, set, best_guess, error)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"--out {out}: write predictions to a .jsonl, .json or .csv file")
    if suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["id", "row", "user", "split", "true_label", "label",
                         *(f"p_{label}" for label in labels), "text_only", "image_only", "set",
                         "best_guess", "error"])
        for r in records:
            probs = r.get("probabilities", {})
            evidence = r.get("evidence", {})
            writer.writerow([r["id"], r["row"], r.get("user") or "", r.get("split") or "",
                             r.get("true_label") or "", r.get("label", ""),
                             *(probs.get(label, "") for label in labels),
                             evidence.get("text_only", {}).get("label", ""),
                             evidence.get("image_only", {}).get("label", ""), "|".join(r.get("set") or []),
                             r.get("best_guess") or "", r.get("error", "")])
        atomic_write_bytes(out, buffer.getvalue().encode("utf-8"))
    elif suffix == ".json":
        atomic_write_bytes(out, (json.dumps(records, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
    else:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        atomic_write_bytes(out, lines.encode("utf-8"))
