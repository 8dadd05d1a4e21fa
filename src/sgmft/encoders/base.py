"""The one small interface every encoder implements, and the registry that names them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from sgmft.data.images import ImagePreprocess
from sgmft.registry import Registry


class FeatureDims(NamedTuple):
    """Widths of the pooled text and image features (equal when the encoders share a space)."""

    text: int
    image: int


#: words of a cleaned text a sentence encoder sees; the rest is cut (memory and time grow with
#: length: a 550 KB text once took 3.1 GB). Chinese-CLIP cuts at its own 52 tokens.
CONTEXT_WORDS = 256


def truncate_words(texts: list[str], words: int) -> list[str]:
    """Each cleaned (space-joined) text cut to its first ``words`` words."""
    return [" ".join(text.split(" ", words)[:words]) for text in texts]


class TextEncoder(ABC):
    """Texts -> pooled features (N, dim), float32."""

    name: str
    dim: int

    @abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray: ...

    def encode_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled (N, dim) and token states (N, L, dim). A sentence encoder that exposes no
        token states gives its pooled vector as a sequence of one token."""
        pooled = self.encode(texts)
        return pooled, pooled[:, None, :]

    def config(self) -> dict[str, Any]:
        """What identifies this encoder's output (recorded in feature caches)."""
        return {"name": self.name, "dim": self.dim, "context_words": CONTEXT_WORDS}


class ImageEncoder(ABC):
    """RGB images -> pooled features (N, dim), float32, after ``preprocess``."""

    name: str
    dim: int
    preprocess: ImagePreprocess

    @abstractmethod
    def encode(self, images: list[Image.Image]) -> np.ndarray: ...

    def encode_with_tokens(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled (N, dim) and patch tokens (N, L, dim)."""
        raise NotImplementedError(f"{self.name} gives no patch tokens")

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "preprocess": self.preprocess.__dict__}


class Encoder(ABC):
    """A text encoder and an image encoder, used together: what `sgmft extract` runs."""

    name: str

    @property
    @abstractmethod
    def dim(self) -> FeatureDims: ...

    @property
    @abstractmethod
    def shared_space(self) -> bool:
        """True when text and image features live in one space (CLIP), False otherwise."""

    @property
    @abstractmethod
    def image_preprocess(self) -> ImagePreprocess:
        """How the image encoder resizes and normalises its input."""

    @abstractmethod
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Cleaned texts -> float32 (N, dim.text)."""

    @abstractmethod
    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        """RGB images -> float32 (N, dim.image)."""

    def encode_texts_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled (N, dim.text) and token states (N, L_text, dim.text), for the sequence reading."""
        raise NotImplementedError(f"encoder {self.name} gives no text token states")

    def encode_images_with_tokens(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled (N, dim.image) and patch tokens (N, L_image, dim.image)."""
        raise NotImplementedError(f"encoder {self.name} gives no image patch tokens")

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Everything that determines the features (recorded in, and checked against, caches)."""


class PairEncoder(Encoder):
    """Separately trained text and image encoders (their spaces differ)."""

    def __init__(self, name: str, text: TextEncoder, image: ImageEncoder):
        self.name = name
        self.text = text
        self.image = image

    @property
    def dim(self) -> FeatureDims:
        return FeatureDims(self.text.dim, self.image.dim)

    @property
    def shared_space(self) -> bool:
        return False

    @property
    def image_preprocess(self) -> ImagePreprocess:
        return self.image.preprocess

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        encoded = self.text.encode(truncate_words(texts, CONTEXT_WORDS))
        return np.asarray(encoded, dtype=np.float32).reshape(len(texts), -1)

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        return np.asarray(self.image.encode(images), dtype=np.float32).reshape(len(images), -1)

    def encode_texts_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.text.encode_with_tokens(truncate_words(texts, CONTEXT_WORDS))

    def encode_images_with_tokens(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        return self.image.encode_with_tokens(images)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "text": self.text.config(), "image": self.image.config()}


ENCODERS = Registry("encoder")
register_encoder = ENCODERS.register


def create_encoder(name: str, **kwargs: Any) -> Encoder:
    """Build a registered encoder by name; keyword arguments go to its factory."""
    return ENCODERS.get(name)(**kwargs)


def available_encoders() -> list[str]:
    return list(ENCODERS)
