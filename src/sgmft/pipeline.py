"""Glue shared by the CLI, training and serving: where a manifest's features live."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from sgmft.data.manifest import Manifest
from sgmft.data.splits import work_dir
from sgmft.encoders import DEFAULT_ENCODER
from sgmft.encoders.cache import FeatureCache, extract_features
from sgmft.text.cleaning import TextConfig


def encoder_options(encoder: str, checkpoint: str | None) -> dict[str, str]:
    """The options that determine an encoder's features (checked against caches)."""
    if checkpoint is not None:
        if encoder != "chinese-clip":
            raise ValueError(f"--checkpoint applies to chinese-clip, not {encoder}")
        return {"checkpoint": checkpoint}
    return {}


def default_cache_dir(manifest: Manifest, encoder: str) -> Path:
    return work_dir(manifest) / f"features-{encoder.replace('+', '-').replace('/', '_')}"


def ensure_features(manifest: Manifest, encoder: str | None = None, checkpoint: str | None = None,
                    out: Path | None = None, **kwargs) -> tuple[FeatureCache, Path]:
    """Extract (or reuse) the feature cache of ``manifest``; returns it and its folder."""
    encoder = encoder or DEFAULT_ENCODER
    folder = out or default_cache_dir(manifest, encoder)
    cache = extract_features(manifest, folder, encoder, encoder_options(encoder, checkpoint),
                             text_config=asdict(TextConfig()), **kwargs)
    return cache, folder
