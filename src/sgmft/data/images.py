"""Image loading and encoder preprocessing with PIL + numpy (no torchvision, see BACKBONES.md).

`load_image` turns any readable file into an RGB `PIL.Image`: EXIF orientation applied,
RGBA/LA/P/CMYK/greyscale converted (transparent areas composited on white), the first frame
of an animated image, a decompression-bomb limit, truncated files rejected.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from sgmft.limits import LIMITS

#: Pixels above which an image is refused as a decompression bomb (about 8,000 x 8,000).
MAX_PIXELS = LIMITS.image_pixels

RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class ImageError(ValueError):
    """An image file that cannot be used: missing, not an image, truncated, or too large."""


@dataclass(frozen=True)
class ImagePreprocess:
    """How an encoder wants its pixels: resize straight to ``size`` x ``size``, then normalise.

    Chinese-CLIP: bicubic to 224x224, no centre crop, OpenAI CLIP mean/std.
    """

    size: int = 224
    resample: str = "bicubic"
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    def resize(self, image: Image.Image) -> Image.Image:
        """The resize step alone: an image already at ``size`` x ``size`` passes it unchanged
        (Pillow copies it), so resizing early, to hold less memory, changes no pixel."""
        return image.resize((self.size, self.size), RESAMPLE[self.resample])

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB image -> float32 array (3, size, size), normalised."""
        array = np.asarray(self.resize(image), dtype=np.float32) / 255.0
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def batch(self, images: list[Image.Image]) -> np.ndarray:
        """List of RGB images -> float32 array (N, 3, size, size)."""
        return np.stack([self(image) for image in images])


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited onto white."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "I;16" or image.mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.uint16) >> 8
        return Image.fromarray(array.astype(np.uint8)).convert("RGB")
    if image.mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        span = max(array.max() - array.min(), 1e-12)
        scaled = ((array - array.min()) / span * 255).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Bytes of an image file -> RGB image, or `ImageError` saying why not.

    The pixel count is checked from the header, before any pixel is decoded; PIL's own
    bomb check (beyond 2 x `Image.MAX_IMAGE_PIXELS`) is reported the same way.
    """
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"decompression bomb refused: {width}x{height} pixels, more than sgmft's limit "
                             f"of {max_pixels:,} (SGMFT_LIMIT_IMAGE_PIXELS)")
        image.seek(0)  # animated GIF/WebP/APNG: the first frame
        image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"decompression bomb refused: more pixels than sgmft's limit of {max_pixels:,} "
                         "(SGMFT_LIMIT_IMAGE_PIXELS)") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError("not an image: the file is in no image format sgmft reads (JPEG, PNG, GIF, WebP, "
                         "BMP, TIFF, ...)") from exc
    except MemoryError:
        raise
    except Exception as exc:   # any decoder's failure (OSError, SyntaxError, AVIF's RuntimeError...)
        raise ImageError(f"unreadable image: {_decoder_failure(exc)}") from exc
    try:
        image = ImageOps.exif_transpose(image) or image
    except MemoryError:
        raise
    except Exception:   # corrupt EXIF: the pixels decoded; use them as stored
        pass
    try:
        return _to_rgb(image)
    except MemoryError:
        raise
    except Exception as exc:
        raise ImageError(f"unreadable image: its colour mode {image.mode} cannot be turned into RGB") from exc


def _decoder_failure(exc: Exception) -> str:
    """A decoder's failure in words (no exception names, no decoder internals)."""
    text = str(exc).lower()
    if "truncated" in text or "not processed" in text or "premature end" in text:
        return "the file is truncated (it ends before the image does)"
    return "the file is corrupt: its image data cannot be decoded"


def perceptual_hash(image: Image.Image) -> str:
    """The DCT perceptual hash of an RGB image (``imagehash.phash``, 64 bits, hex): a resized,
    re-encoded or lightly cropped copy of a photo lands within a few bits of the original
    (`sgmft.data.groups` joins such near duplicates)."""
    import imagehash

    return str(imagehash.phash(image, hash_size=8))


#: the side of the thumbnail whose colours `colour_layout` keeps
LAYOUT_SIDE = 4


def colour_layout(image: Image.Image) -> str:
    """The chromaticity of a 4 x 4 thumbnail, hex (32 bytes: r and g of r + g + b per cell,
    0-255): what the perceptual hash ignores (it sees brightness only, compared with its
    median), and what a resized, re-encoded, brightened or lightly cropped copy keeps. Two
    flat renders of the same shape in other colours have near-equal hashes and far-apart
    layouts; `sgmft.data.groups` counts a near-duplicate pair only when both agree."""
    cells = np.asarray(image.resize((LAYOUT_SIDE, LAYOUT_SIDE), Image.Resampling.BOX), np.float32) + 1.0
    chroma = cells[..., :2] / cells.sum(-1, keepdims=True)                     # (4, 4, 2)
    return np.round(chroma * 255).astype(np.uint8).tobytes().hex()


def image_stat(path: str | Path) -> os.stat_result:
    """``os.stat`` of an image path that can be read: a regular file (a symbolic link is
    followed) of at most `LIMITS.image_bytes`; `ImageError` saying why not otherwise. Nothing
    is opened, so a FIFO or a device can neither hang nor flood the reader."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"missing image: {path}") from None
    except ValueError:
        raise ImageError(f"invalid image path (it contains a null byte): {str(path)!r}") from None
    except OSError as exc:
        raise ImageError(f"unreadable image {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO, socket or device"
        raise ImageError(f"not a regular file ({kind}): {path}")
    if info.st_size == 0:
        raise ImageError(f"image is an empty file: {path}")
    if info.st_size > LIMITS.image_bytes:
        raise ImageError(f"image file of {info.st_size} bytes exceeds the limit of "
                         f"{LIMITS.image_bytes} bytes (SGMFT_LIMIT_IMAGE_BYTES): {path}")
    return info


def read_image_bytes(path: str | Path) -> bytes:
    """The bytes of an image file that passes `image_stat`."""
    image_stat(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(LIMITS.image_bytes + 1)
    except OSError as exc:
        raise ImageError(f"unreadable image {path}: {exc.strerror or exc}") from None
    if len(data) > LIMITS.image_bytes:   # it grew after the check
        raise ImageError(f"image file exceeds the limit of {LIMITS.image_bytes} bytes: {path}")
    return data


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read and decode an image file (see `read_image_bytes` and `decode_image`)."""
    return decode_image(read_image_bytes(path), max_pixels)


def header_pixels(path: str | Path) -> int:
    """Width x height of an image file from its header (no pixel decoded); 0 if unreadable
    (the decoder then reports the problem)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except MemoryError:
        raise
    except Exception:   # any decoder's failure (AVIF's is a RuntimeError): reported on decoding
        return 0
    return width * height


class PixelBudget:
    """At most ``capacity`` decoded pixels at once across threads: `hold` waits until its
    image fits (an image larger than the whole budget waits until it runs alone)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.in_use = 0
        self._condition = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        pixels = min(pixels, self.capacity)
        with self._condition:
            self._condition.wait_for(lambda: self.in_use + pixels <= self.capacity)
            self.in_use += pixels
        try:
            yield
        finally:
            with self._condition:
                self.in_use -= pixels
                self._condition.notify_all()


def load_resized(path: str | Path, preprocess: ImagePreprocess, budget: PixelBudget) -> Image.Image:
    """Decode an image within the pixel budget and resize it to the encoder's input at once,
    so that only small images are held (`ImagePreprocess.resize` then changes nothing)."""
    with budget.hold(header_pixels(path)):
        return preprocess.resize(load_image(path))
