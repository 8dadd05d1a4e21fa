"""The data of a run, loaded once: the manifest, its feature cache and its split; the model
built for it; and the part of the training split that validation uses."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sgmft.data.manifest import Manifest, load_manifest, report_skipped
from sgmft.data.splits import carve_validation, load_or_make_split
from sgmft.encoders.cache import FeatureCache
from sgmft.encoders.features import ensure_features
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
    manifest = load_manifest(data.manifest, data.image_root, data.labels,
                             skip_invalid=data.skip_invalid)
    report_skipped(manifest)
    cache, folder = ensure_features(manifest, data.encoder, data.checkpoint,
                                    Path(data.cache) if data.cache else None,
                                    device=device or config.train.device, progress=progress,
                                    sequences=config.model.reading == "sequence")
    split = load_or_make_split(manifest, data.split, data.test_fraction, data.split_seed)
    return PreparedData(manifest, cache, folder, split)


def needs_validation(config: RunConfig) -> bool:
    """Early stopping and the fallback mixture choose on a validation part."""
    return bool(config.train.early_stopping) or config.model.fallback


def validation_part(config: RunConfig, prepared: PreparedData) -> tuple[list[str], list[str], str]:
    """(training ids, validation ids, how they were chosen): the manifest's own ``val`` rows
    when it has them, else a part carved from the train split by group (`carve_validation`)."""
    train_ids = prepared.split["train"]
    if not needs_validation(config):
        return train_ids, [], "none"
    if prepared.split.get("val"):
        return train_ids, prepared.split["val"], "the manifest's val rows"
    wanted = set(train_ids)
    posts = [p for p in prepared.manifest.posts if p.id in wanted]
    return carve_validation(posts, config.train.val_fraction, config.train.seed, config.train.val_by)


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


