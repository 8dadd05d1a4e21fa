"""Where a manifest's features live: the default cache folder, extraction or reuse, and finding a
matching cache (shared by the CLI, training and serving)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from pathlib import Path

from sgmft.data.manifest import Manifest
from sgmft.data.workdir import work_dir
from sgmft.device import resolve_precision
from sgmft.encoders import DEFAULT_ENCODER
from sgmft.encoders.cache import (
    IMPORTED,
    CacheCorruptError,
    CacheMismatchError,
    FeatureCache,
    check_compatible,
    encoder_identity,
    extract_features,
    load_cache,
    read_header,
)
from sgmft.text.cleaning import TextConfig


def encoder_options(encoder: str, checkpoint: str | None) -> dict[str, str]:
    """The options that determine an encoder's features (checked against caches): a checkpoint.

    The arithmetic (fp32, bf16) is not one of them: features of either are the same features
    within cosine 0.99 (tests/encoders/test_efficientnet_lite.py), so a cache of either serves
    training, prediction and serving anywhere; the cache records which it holds."""
    options = {}
    if checkpoint is not None:
        if encoder != "chinese-clip":
            raise ValueError(f"--checkpoint applies to chinese-clip, not {encoder}")
        options["checkpoint"] = checkpoint
    return options


def default_cache_dir(manifest: Manifest, encoder: str) -> Path:
    """The feature cache of a manifest's content and an encoder, in the manifest's work folder."""
    name = encoder.replace("+", "-").replace("/", "_")
    return work_dir(manifest.path) / f"features-{name}-{manifest.content_hash()[:12]}"


def ensure_features(manifest: Manifest, encoder: str | None = None, checkpoint: str | None = None,
                    out: Path | None = None, precision: str = "auto", ray: dict | None = None,
                    **kwargs) -> tuple[FeatureCache, Path]:
    """Extract (or reuse) the feature cache of ``manifest``; returns it and its folder.

    precision: the encoders' arithmetic (``auto``: bf16 where the device computes it natively,
    `sgmft.device.resolve_precision`); a cache already holding these features in another
    arithmetic is reused. ray: {"address", "workers", "gpus_per_worker"} to extract on a Ray
    cluster (the same cache).
    """
    imported = _imported(manifest, out)
    if imported is not None:
        return imported, out   # type: ignore[return-value]
    encoder = encoder or DEFAULT_ENCODER
    folder = out or default_cache_dir(manifest, encoder)
    options = encoder_options(encoder, checkpoint)
    kwargs["precision"] = resolve_precision(precision, kwargs.get("device", "cpu"))
    if ray is not None:
        from sgmft.encoders.ray_extract import extract_with_ray

        cache = extract_with_ray(manifest, folder, encoder, options, text_config=asdict(TextConfig()),
                                 **ray, **kwargs)
    else:
        cache = extract_features(manifest, folder, encoder, options, text_config=asdict(TextConfig()),
                                 **kwargs)
    return cache, folder


def _imported(manifest: Manifest, folder: Path | None) -> FeatureCache | None:
    """The imported feature cache (`sgmft.encoders.imported`) of ``manifest`` in ``folder``, if
    that is what the folder holds: features made elsewhere serve whatever encoder is named."""
    header = read_header(folder) if folder is not None else None
    if header is None or header["encoder_identity"]["name"] != IMPORTED or not header.get("complete"):
        return None
    if header["content_hash"] != manifest.content_hash():
        raise CacheMismatchError(f"{folder} holds features imported for another manifest "
                                 f"({header.get('manifest')}): import them for {manifest.path} with "
                                 "`sgmft extract MANIFEST --from FILE --out DIR`")
    return load_cache(folder)


def find_cache(manifest: Manifest, encoder: str, checkpoint: str | None = None, sequences: bool = False,
               folders: tuple[Path, ...] = ()) -> FeatureCache | None:
    """A complete, valid feature cache of exactly this manifest's posts and this encoder (in
    any arithmetic), from ``folders`` or the manifest's default cache folder; None when there
    is none. A run on imported features (``encoder`` "imported") takes any imported cache of
    the manifest."""
    if encoder == IMPORTED:
        for folder in folders:
            with contextlib.suppress(CacheMismatchError, CacheCorruptError):
                found = _imported(manifest, folder)
                if found is not None:
                    return found
        return None
    identity = encoder_identity(encoder, encoder_options(encoder, checkpoint), sequences)
    for folder in (*folders, default_cache_dir(manifest, encoder)):
        header = read_header(folder)
        if header is None or not header.get("complete"):
            continue
        try:
            check_compatible(header, identity, manifest, folder)
            return load_cache(folder)
        except (CacheMismatchError, CacheCorruptError):
            continue
    return None
