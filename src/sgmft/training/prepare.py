"""The data of a run, loaded once: the manifest, its feature cache and its split; the model
built for it; and the validation folds of its training split."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from sgmft import PLACES
from sgmft.data.folds import Folds, carve_groups, carve_validation, make_folds, validation_column
from sgmft.data.manifest import Manifest, load_manifest, report_skipped
from sgmft.data.splits import load_or_make_split
from sgmft.encoders.cache import FeatureCache
from sgmft.encoders.features import ensure_features
from sgmft.metrics.conformal import NO_SETS
from sgmft.models.model import MultimodalModel
from sgmft.training.config import RunConfig

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """A manifest with its feature cache and split, loaded once and shared by runs."""

    manifest: Manifest
    cache: FeatureCache
    cache_dir: Path
    split: dict[str, Any]
    memo: dict[Any, Any] = field(default_factory=dict)   # fitted probes, shared by runs


def prepare_data(config: RunConfig, progress: bool = True, device: str | None = None) -> PreparedData:
    """Load the manifest, extract (on ``device``, default the run's) or reuse its features,
    and load or make its split."""
    data = config.data
    manifest = load_manifest(data.manifest, data.image_root, data.labels, skip_invalid=data.skip_invalid,
                             any_label=data.labels is None, outside_root=data.allow_outside_root)
    report_skipped(manifest)
    if data.labels is None:
        manifest = labels_with_posts(manifest)
    cache, folder = ensure_features(manifest, data.encoder, data.checkpoint,
                                    Path(data.cache) if data.cache else None,
                                    device=device or config.train.device, progress=progress,
                                    sequences=config.model.reading == "sequence", precision=data.precision)
    split = load_or_make_split(manifest, data.split, data.test_fraction, data.split_seed,
                               group_by=data.group_by)
    return PreparedData(manifest, cache, folder, split)


def labels_with_posts(manifest: Manifest) -> Manifest:
    """The run's label set when ``--labels`` was not given: the default places cut to those the
    posts carry (in their order), or, when the posts carry labels that are not places, the
    data's own labels (sorted); either way said in the log. A set given with ``--labels`` is
    kept as given."""
    counts = Counter(manifest.posts.column("label"))
    present = set(counts) - {None}
    if not present <= set(PLACES):
        labels = tuple(sorted(present))
        if len(labels) < 2:
            raise ValueError(f"{manifest.path}: every post carries the label {labels[0]!r}; a classifier "
                             "needs two labels or more")
        log.warning("labels from the data (not the default places): %s; --labels fixes the set",
                    ", ".join(f"{label} ({counts[label]})" for label in labels))
        return replace(manifest, labels=labels)
    kept = tuple(label for label in manifest.labels if label in present)
    if len(kept) == len(manifest.labels) or len(kept) < 2:
        return manifest
    dropped = [label for label in manifest.labels if label not in present]
    log.warning("labels with no posts left out of the run's label set: %s (name them with --labels "
                "to keep them)", ", ".join(dropped))
    return replace(manifest, labels=kept)


def needs_validation(config: RunConfig) -> bool:
    """Early stopping and the fallback mixture choose on a validation part."""
    return bool(config.train.early_stopping) or config.model.fallback


def calibration_part(config: RunConfig, prepared: PreparedData) -> Folds | None:
    """The training posts held out to calibrate prediction sets and novelty (``train.calibration``
    of them, whole groups as the folds group, `sgmft.data.folds.carve_groups`): no fold, no
    decision and not the final model sees them; the deployed model scores them
    (`sgmft.training.run`). None when not asked, or when the part holds fewer than
    ``train.calibration_min_posts`` posts (measured on me16-dev with Hurricane Sandy held out: 111
    of 856 training posts held out cost 4.7 points of accuracy)."""
    share = config.train.calibration
    if not share:
        return None
    posts = prepared.manifest.posts.having(prepared.split["train"])
    column, images, why = validation_column(prepared.manifest, prepared.split, config.train.val_by,
                                            config.data.group_by)
    carved = carve_groups(posts, share, config.train.seed + 7919, column, images, why)
    held = len(carved.validated)
    if held < config.train.calibration_min_posts:
        log.info("calibration: no posts held out for the prediction sets (the part would hold %d, fewer than "
                 "%d): %s", held, config.train.calibration_min_posts, NO_SETS)
        return None
    return carved


def validation_folds(config: RunConfig, prepared: PreparedData, kept_out: set[str] | None = None) -> Folds:
    """The validation folds of the training split (`sgmft.data.folds`) less the posts
    ``kept_out`` (the calibration part): none when nothing is chosen on validation; the
    manifest's own ``val`` rows as one fold when it has them; one carved part with
    ``train.folds = 1``; else K grouped folds."""
    split, train = prepared.split, config.train
    ids = [i for i in split["train"] if i not in (kept_out or set())]
    if not needs_validation(config):
        return Folds(ids, [-1] * len(ids), 0, "none (no early stopping, no fallback)")
    if split.get("val"):
        return Folds(ids + split["val"], [-1] * len(ids) + [0] * len(split["val"]), 1,
                     "the manifest's val rows")
    posts = prepared.manifest.posts.having(ids)
    column, images, why = validation_column(prepared.manifest, split, train.val_by, config.data.group_by)
    if train.folds == 1:
        return carve_validation(posts, train.val_fraction, train.seed, column, images, why)
    return make_folds(posts, train.folds, train.seed, column, images, why)


def token_lengths(features: dict[str, Any]) -> tuple[int, int] | None:
    """(L_text, L_image) of a cache header or a run's feature record, when it has sequences."""
    shapes = features.get("token_shapes")
    return (shapes["text"][0], shapes["image"][0]) if shapes else None


def build_model(config: RunConfig, cache: FeatureCache, num_classes: int,
                vocab_size: int) -> MultimodalModel:
    dims = cache.header["dims"]
    torch.manual_seed(config.train.seed)
    return MultimodalModel(config.model, dims["text"], dims["image"], num_classes, vocab_size,
                           cache.header.get("shared_space", False), token_lengths(cache.header))


