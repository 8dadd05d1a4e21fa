"""Tensors for training and evaluation: cached features, word ids and labels, by split.

The features stay where the cache keeps them (memory-mapped chunks): a split's features are
`Rows`, row indices into the cache, gathered one batch at a time; folds select rows of rows.
Word ids and labels, small, are tensors. `select` takes rows of either kind."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sgmft.data.manifest import Manifest
from sgmft.data.posts import PostTable
from sgmft.encoders.cache import FeatureCache
from sgmft.io import atomic_write_json
from sgmft.models.config import ModelConfig

PAD, UNK = 0, 1


@dataclass
class Vocabulary:
    """jieba tokens -> ids for the word-level text inputs; 0 pads, 1 is unknown."""

    tokens: list[str]

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], max_size: int = 30000,
              min_count: int = 1) -> Vocabulary:
        counts = Counter(tok for tokens in token_lists for tok in tokens)
        ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(["<pad>", "<unk>", *ranked[: max_size - 2]])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, token_lists: Sequence[Sequence[str]], length: int,
               dtype: torch.dtype = torch.long) -> torch.Tensor:
        """Token lists -> (N, length) ids (int64, or ``dtype``), truncated or padded with 0."""
        index = self.index
        ids = np.zeros((len(token_lists), length), dtype=np.int32)
        for row, tokens in enumerate(token_lists):
            values = [index.get(tok, UNK) for tok in tokens[:length]]
            ids[row, : len(values)] = values
        return torch.from_numpy(ids).to(dtype)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {tok: i for i, tok in enumerate(self.tokens)}

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.tokens)

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        import json

        return cls(json.loads(path.read_text(encoding="utf-8")))


def tokens_of(manifest: Manifest, ids: list[str]) -> Iterator[list[str]]:
    """The cleaned tokens of the posts ``ids``, in manifest order (for `Vocabulary.build`)."""
    wanted = set(ids)
    return (tokens for post_id, tokens in manifest.posts.rows("id", "tokens") if post_id in wanted)


class Rows:
    """Rows ``rows`` (N,) of an array-like ``source`` (M, ...) (a memory-mapped feature): a
    split's features without a copy. ``rows_view[index]`` gathers those rows into a tensor;
    `take` selects rows of these rows, still without a copy."""

    def __init__(self, source, rows: np.ndarray):
        self.source, self.rows = source, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.source.shape[1:])

    def __getitem__(self, index) -> torch.Tensor:
        picked = self.rows[np.asarray(index)]
        return torch.from_numpy(np.ascontiguousarray(self.source[picked]))

    def take(self, index) -> Rows:
        return Rows(self.source, self.rows[np.asarray(index)])


Data = dict[str, "torch.Tensor | Rows"]


def chunks_of(tensors: Data) -> np.ndarray | None:
    """(N,) the cache chunk that holds each row, when the rows are read from a chunked cache
    (`Rows` of a `sgmft.encoders.chunks.ChunkedArray`); None for tensors in memory."""
    for value in tensors.values():
        if isinstance(value, Rows) and hasattr(value.source, "chunk_rows"):
            return value.rows // value.source.chunk_rows
    return None


def select(tensors: Data, index) -> Data:
    """The rows ``index`` (int array or tensor) of every tensor (copied: small) and every
    `Rows` (a view)."""
    index = torch.as_tensor(np.asarray(index), dtype=torch.long)
    return {key: value.take(index.numpy()) if isinstance(value, Rows) else value[index]
            for key, value in tensors.items()}


def in_batches(value: torch.Tensor | Rows, size: int = 8192):
    """The rows of a tensor or `Rows`, in order, ``size`` at a time (tensors)."""
    for start in range(0, len(value), size):
        yield value[torch.arange(start, min(start + size, len(value)))]


def post_tensors(manifest: Manifest, cache: FeatureCache, ids: list[str], vocab: Vocabulary,
                 model: ModelConfig, with_labels: bool = True) -> Data:
    """{"text": (N, D_t), "image": (N, D_i) as `Rows` of the cache, "label": (N,) int64} for
    ``ids``; "tokens" (N, T) int32 word ids for a model that reads words (``text_input``
    word_mean or textcnn); with the sequence reading the token states "text_tokens",
    "image_tokens" (float16, as cached) as `Rows`."""
    rows, where = cache.rows(ids), manifest.posts.positions(ids)

    def parts() -> Iterator[PostTable]:
        """The posts of ``ids``, in order, 8,192 at a time (never all of them copied at once)."""
        return (manifest.posts.take(where[start:start + 8192]) for start in range(0, len(where), 8192))

    tensors: Data = {"text": Rows(cache.text, rows), "image": Rows(cache.image, rows)}
    if model.text_input != "features":
        length = model.max_tokens
        tokens = [vocab.encode(part.column("tokens"), length, torch.int32) for part in parts()]
        tensors["tokens"] = torch.cat(tokens) if tokens else torch.zeros(0, length, dtype=torch.int32)
    if model.reading == "sequence":
        if cache.text_tokens is None or cache.image_tokens is None:
            raise ValueError("the feature cache holds no token sequences: sgmft extract --sequences")
        tensors["text_tokens"] = Rows(cache.text_tokens, rows)
        tensors["image_tokens"] = Rows(cache.image_tokens, rows)
    if with_labels:
        tensors["label"] = torch.from_numpy(manifest.label_indices(where))
    return tensors



def batches(tensors: Data, batch_size: int, order: torch.Tensor | None = None):
    """Yield dicts of at most ``batch_size`` rows (tensors; word ids as int64), the rows of
    ``order`` (default: all, as stored)."""
    order = torch.arange(len(next(iter(tensors.values())))) if order is None else order
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = {key: value[index] for key, value in tensors.items()}
        if "tokens" in batch:
            batch["tokens"] = batch["tokens"].long()
        yield batch
