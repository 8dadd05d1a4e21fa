"""Shared fixtures: small images, manifests and a deterministic fake encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sgmft.encoders.base import Encoder, FeatureDims


@pytest.fixture(scope="session", autouse=True)
def hermetic_caches(tmp_path_factory):
    """Every cache the suite writes goes to a temporary folder, whatever the user's environment:
    no ``$SGMFT_CACHE`` (a test that wants one sets it), and ``$XDG_CACHE_HOME`` (sgmft's
    ``~/.cache/sgmft``) in the session's temporary folder; both restored afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SGMFT_CACHE", raising=False)
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


def write_image(path: Path, color=(200, 30, 30), size=(32, 24), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def with_images(rows: list[dict], source: Path, folder: Path) -> list[dict]:
    """``rows`` whose relative image paths (under ``source``) are copied into ``folder``, so that a
    manifest written there finds them inside its own folder (image paths may not leave it)."""
    import shutil

    for row in rows:
        target = folder / row["image"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / row["image"], target)
    return rows


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


SHAPES = ("ellipse", "rectangle", "triangle", "diamond")
RENDER_TEXTS = {"home": "在家 沙发 休息", "work": "公司 加班 会议", "school": "学校 上课 考试",
                "restaurant": "餐厅 美食 火锅", "cinema": "电影院 看电影 爆米花", "gym": "健身房 练腿 跑步",
                "shopping": "商场 购物 打折", "travel": "旅行 风景 机场"}


def render_flat_posts(folder: Path, per_label: int = 6, seed: int = 0) -> Path:
    """What a new user tries first: per place, ``per_label`` renders of one small centred
    shape on a flat background, in random colours (48 posts by default). Their perceptual hashes
    fall within 12 bits of each other across labels (394 pairs); they are not copies."""
    import random

    from PIL import ImageDraw

    rng = random.Random(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for li, (label, text) in enumerate(RENDER_TEXTS.items()):
        for j in range(per_label):
            image = Image.new("RGB", (128, 128), tuple(rng.randrange(256) for _ in range(3)))
            side = rng.randrange(8, 16)
            x0, y0, x1, y1 = 64 - side, 64 - side, 64 + side, 64 + side
            fill = tuple(rng.randrange(256) for _ in range(3))
            draw = ImageDraw.Draw(image)
            shape = SHAPES[li % len(SHAPES)]
            if shape == "ellipse":
                draw.ellipse((x0, y0, x1, y1), fill=fill)
            elif shape == "rectangle":
                draw.rectangle((x0, y0, x1, y1), fill=fill)
            elif shape == "triangle":
                draw.polygon([(x0, y1), (x1, y1), (64, y0)], fill=fill)
            else:
                draw.polygon([(64, y0), (x1, 64), (64, y1), (x0, 64)], fill=fill)
            name = f"img/{label}{j}.png"
            image.save(folder / name)
            rows.append({"id": f"{label}{j}", "text": f"{text} 第{j}天", "image": name, "label": label,
                         "user": f"u{j % 3}"})
    return write_jsonl(folder / "posts.jsonl", rows)
