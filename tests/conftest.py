"""Shared fixtures: small images, manifests and a deterministic fake encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sgmft.encoders.base import Encoder, FeatureDims


def write_image(path: Path, color=(200, 30, 30), size=(32, 24), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


@pytest.fixture
def small_manifest(tmp_path: Path) -> Path:
    """Eight valid posts, one per place, two of them sharing identical image bytes."""
    from sgmft import PLACES

    rows = []
    for i, label in enumerate(PLACES):
        color = (30 * i, 255 - 30 * i, 100)
        name = f"images/{label}.png"
        write_image(tmp_path / name, color if i != 7 else (0, 255, 100))  # 7 repeats 0's bytes
        rows.append({"id": f"p{i}", "text": f"今天去了{label}地方 很开心 [哈哈]", "image": name,
                     "label": label, "user": f"u{i % 4}"})
    return write_jsonl(tmp_path / "posts.jsonl", rows)


class FakeEncoder(Encoder):
    """Deterministic features from the text's characters and the image's mean colour; counts calls."""

    name = "fake"

    def __init__(self, device: str = "cpu", dim: int = 6, precision: str = "fp32"):
        self._dim = dim
        self.precision = precision
        self.texts_seen: list[str] = []
        self.images_seen = 0

    @property
    def dim(self) -> FeatureDims:
        return FeatureDims(self._dim, 3)

    @property
    def shared_space(self) -> bool:
        return False

    @property
    def image_preprocess(self):
        from sgmft.data.images import ImagePreprocess

        return ImagePreprocess(size=8)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        self.texts_seen += texts
        return np.asarray([[sum(map(ord, t)) % (k + 7) for k in range(self._dim)] for t in texts],
                          np.float32)

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        self.images_seen += len(images)
        return np.asarray([np.asarray(im, np.float32).mean(axis=(0, 1)) for im in images])

    def encode_texts_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        pooled = self.encode_texts(texts)
        return pooled, np.stack([pooled, -pooled], axis=1)          # 2 tokens

    def encode_images_with_tokens(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        pooled = self.encode_images(images)
        return pooled, np.stack([pooled, pooled + 1, pooled + 2], axis=1)  # 3 tokens

    def config(self) -> dict:
        return {"name": self.name, "dim": self._dim}


@pytest.fixture
def fake_encoder_factory():
    """A factory that records the encoders it built (to count what was encoded)."""
    built: list[FakeEncoder] = []

    def factory(**kwargs) -> FakeEncoder:
        encoder = FakeEncoder(**kwargs)
        built.append(encoder)
        return encoder

    factory.built = built  # type: ignore[attr-defined]
    return factory
