"""Tensors for training and evaluation: cached features, word ids and labels, by split."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sgmft.data.manifest import Manifest
from sgmft.encoders.cache import FeatureCache
from sgmft.io import atomic_write_json

PAD, UNK = 0, 1


@dataclass
class Vocabulary:
    """jieba tokens -> ids for the word-level text inputs; 0 pads, 1 is unknown."""

    tokens: list[str]

    @classmethod
    def build(cls, token_lists: list[tuple[str, ...]], max_size: int = 30000,
              min_count: int = 1) -> Vocabulary:
        counts = Counter(tok for tokens in token_lists for tok in tokens)
        ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(["<pad>", "<unk>", *ranked[: max_size - 2]])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, token_lists: list[tuple[str, ...]], length: int) -> torch.Tensor:
        """Token lists -> (N, length) int64 ids, truncated or padded with 0."""
        index = {tok: i for i, tok in enumerate(self.tokens)}
        ids = torch.zeros(len(token_lists), length, dtype=torch.long)
        for row, tokens in enumerate(token_lists):
            values = [index.get(tok, UNK) for tok in tokens[:length]]
            ids[row, : len(values)] = torch.tensor(values, dtype=torch.long)
        return ids

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.tokens)

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        import json

        return cls(json.loads(path.read_text(encoding="utf-8")))


def post_tensors(manifest: Manifest, cache: FeatureCache, ids: list[str], vocab: Vocabulary,
                 max_tokens: int, with_labels: bool = True,
                 sequences: bool = False) -> dict[str, torch.Tensor]:
    """{"text": (N, D_t), "image": (N, D_i), "tokens": (N, T), "label": (N,)} for ``ids``, and
    with ``sequences`` the token states "text_tokens", "image_tokens" (float16, as cached)."""
    rows = cache.rows(ids)
    by_id = {post.id: post for post in manifest.posts}
    posts = [by_id[i] for i in ids]
    tensors = {
        "text": torch.from_numpy(np.ascontiguousarray(cache.text[rows])),
        "image": torch.from_numpy(np.ascontiguousarray(cache.image[rows])),
        "tokens": vocab.encode([p.tokens for p in posts], max_tokens),
    }
    if sequences:
        if cache.text_tokens is None or cache.image_tokens is None:
            raise ValueError("the feature cache holds no token sequences: sgmft extract --sequences")
        tensors["text_tokens"] = torch.from_numpy(np.ascontiguousarray(cache.text_tokens[rows]))
        tensors["image_tokens"] = torch.from_numpy(np.ascontiguousarray(cache.image_tokens[rows]))
    if with_labels:
        index = {label: i for i, label in enumerate(manifest.labels)}
        tensors["label"] = torch.tensor([index[p.label] for p in posts], dtype=torch.long)
    return tensors


def batches(tensors: dict[str, torch.Tensor], batch_size: int, order: torch.Tensor | None = None):
    """Yield dicts of at most ``batch_size`` rows, the rows of ``order`` (default: all, as stored)."""
    order = torch.arange(len(next(iter(tensors.values())))) if order is None else order
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield {key: value[index] for key, value in tensors.items()}
