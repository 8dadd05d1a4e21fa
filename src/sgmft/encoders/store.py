"""The feature cache as stored, and opened in constant time (`load_cache`); what
`sgmft.encoders.cache` writes.

Layout of a cache folder::

    cache.json              header: encoder, manifest content hash, post count, dtype, chunk
                            hashes and sizes
    ids.arrow               every row's post id and `Post.digest`, with sorted indexes of both
                            (`sgmft.data.idtable`: opened without reading them row by row)
    chunk-00000.safetensors {"text": (n, D_text), "image": (n, D_image)} float32 (or float16:
                            ``--dtype float16``), and with sequences {"text_tokens": (n, L_text,
                            D_text), "image_tokens": (n, L_image, D_image)} float16
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from sgmft.data.idtable import IdTable, IdTableCorruptError, write_table
from sgmft.data.manifest import Manifest
from sgmft.encoders.chunks import ChunkedArray, ChunkFiles, chunk_is_valid, chunk_name
from sgmft.io import sha256_file

FORMAT_VERSION = 1
HEADER = "cache.json"
DIGESTS = "digests.npy"   # caches before ids.arrow: the digests alone (their ids in the header)
IDS = "ids.arrow"
#: the pooled features, stored in the cache's dtype and read as float32 (`stored_as`)
POOLED = ("text", "image")
#: a chunk file holds about this many bytes unless a row count is asked for (`rows_per_chunk`)
CHUNK_MIB = 64


class CacheMismatchError(RuntimeError):
    """The folder holds a cache of another encoder or another manifest."""


class CacheCorruptError(RuntimeError):
    """A chunk is missing or its bytes do not match the hash recorded when it was written."""


class FeatureCache:
    """Features of every post of a manifest, in manifest order: memory-mapped chunks
    (`ChunkedArray`) when loaded from disk, gathered a batch of rows at a time.

    text (N, D_text), image (N, D_image); with sequences text_tokens (N, L_text, D_text) and
    image_tokens (N, L_image, D_image) float16. The posts' ids and digests live in ``table``
    (``ids.arrow``), found by binary search; ``ids`` (a list of every id) is read only when asked.
    A cache in memory (tests) or written before ids.arrow passes ``ids`` (and ``digests``)."""

    def __init__(self, ids: list[str] | None, text: ChunkedArray | np.ndarray,
                 image: ChunkedArray | np.ndarray, header: dict[str, Any],
                 text_tokens: ChunkedArray | np.ndarray | None = None,
                 image_tokens: ChunkedArray | np.ndarray | None = None, digests: np.ndarray | None = None,
                 table: IdTable | None = None):
        if ids is not None:
            self.__dict__["ids"] = list(ids)
        self.text, self.image, self.header = text, image, header
        self.text_tokens, self.image_tokens, self.table = text_tokens, image_tokens, table
        self.digests = table.column("digest") if table is not None else digests

    @functools.cached_property
    def ids(self) -> list[str]:
        """Every post id, in row order (read from ``ids.arrow`` on first use)."""
        return self.table.ids()

    def holds(self, post) -> int | None:
        """The row of ``post`` when this cache holds its features (same id, cleaned text and
        image bytes, by digest), else None."""
        return self.holding([post])[0]

    def holding(self, posts) -> list[int | None]:
        """`holds` for many posts at once: their digests looked up in the sorted digests (no
        index of every id is built; a cache written before digests: None)."""
        if self.digests is None:
            return [None] * len(posts)
        wanted = np.fromiter((post.digest() for post in posts), np.uint64, len(posts))
        if self.table is not None:
            rows = self.table.find("digest", wanted)
            hits = np.flatnonzero(rows >= 0)
            names = dict(zip(hits.tolist(), self.table.take("id", rows[hits]), strict=True))
            return [int(rows[j]) if names.get(j) == post.id else None for j, post in enumerate(posts)]
        ordered, order = self._by_digest
        at = np.minimum(np.searchsorted(ordered, wanted), max(len(ordered) - 1, 0))
        found = (ordered[at] == wanted) if len(ordered) else np.zeros(len(posts), bool)
        return [int(order[i]) if hit and self.ids[int(order[i])] == post.id else None
                for i, hit, post in zip(at, found, posts, strict=True)]

    @functools.cached_property
    def _by_digest(self) -> tuple[np.ndarray, np.ndarray]:
        """A cache before ids.arrow: its digests sorted, and the row of each (built once)."""
        order = np.argsort(self.digests, kind="stable")
        return np.asarray(self.digests)[order], order

    def __len__(self) -> int:
        return len(self.table) if self.table is not None else len(self.ids)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """Post id -> row, built once (caches before ids.arrow)."""
        return {post_id: i for i, post_id in enumerate(self.ids)}

    def rows(self, ids: list[str]) -> np.ndarray:
        """Row indices of ``ids`` in this cache (KeyError naming the first missing id)."""
        if self.table is not None:
            rows = self.table.positions(ids)
            missing = np.flatnonzero(rows < 0)
            if len(missing):
                raise KeyError(f"post {ids[missing[0]]!r} is not in the feature cache")
            return rows
        index = self.index
        try:
            return np.fromiter((index[post_id] for post_id in ids), dtype=np.int64, count=len(ids))
        except KeyError as exc:
            raise KeyError(f"post {exc.args[0]!r} is not in the feature cache") from None


def read_header(folder: Path) -> dict[str, Any] | None:
    """The cache header, or None when it is absent or unreadable (then the cache is rebuilt)."""
    try:
        header = json.loads((folder / HEADER).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) and header.get("format") == FORMAT_VERSION else None


def check_dtype(header: dict[str, Any], dtype: str | None, folder: Path) -> None:
    """A cache stored in another precision than ``dtype`` asks for (None: any) is not reused."""
    stored = header.get("dtype", "float32")
    if dtype is not None and stored != dtype:
        raise CacheMismatchError(f"{folder} stores its features in {stored}, not {dtype}: extract again with "
                                 f"--dtype {dtype} --overwrite, or use another cache folder (extract --out)")


def stored_as(tensors: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """The pooled features (text, image) of a chunk in the cache's ``dtype`` (float32 or
    float16: half the disk and page cache); token states are float16 whatever it is."""
    return {key: value.astype(dtype) if key in POOLED else value for key, value in tensors.items()}


def rows_per_chunk(dims: dict[str, int], dtype: str, token_shapes: dict[str, Any] | None = None,
                   mib: float = CHUNK_MIB) -> int:
    """Posts per chunk file so that a chunk holds about ``mib`` MiB: a post's pooled features
    (``dims`` {modality: width}, stored in ``dtype``) and its token states (``token_shapes``
    {modality: (L, D)}, float16), at least one post. 64 MiB is 9,362 posts of 512 + 1,280 float32
    features, 18,724 in float16."""
    row = sum(dims.values()) * np.dtype(dtype).itemsize
    row += sum(int(np.prod(shape)) for shape in (token_shapes or {}).values()) * 2
    return max(1, int(mib * 2**20) // max(1, row))


def write_ids(folder: Path, manifest: Manifest) -> dict[str, Any]:
    """Write ``ids.arrow``: every post's id and `Post.digest` (uint64) in cache order, indexed by
    both (`sgmft.data.idtable`); return what the header records of it."""
    digests = np.fromiter((post.digest() for post in manifest.posts), dtype=np.uint64,
                          count=len(manifest.posts))
    write_table(folder / IDS, manifest.ids, {"digest": digests}, index=("id", "digest"))
    return {"ids_file": IDS, "posts": len(digests), "ids_sha256": sha256_file(folder / IDS)}


def load_cache(folder: str | Path, verify: bool = False) -> FeatureCache:
    """Open a complete cache in time and memory independent of its post count: the chunks'
    sizes are checked against the header (with ``verify``: their recorded SHA-256, and that of
    ids.arrow, a full read: `sgmft extract --verify`); the features are memory-mapped
    (`ChunkedArray`, each chunk's layout read when it is first used) and the ids are found by
    binary search in ``ids.arrow``'s mapped index. Each chunk's hash was checked when it was
    written."""
    folder = Path(folder)
    header = read_header(folder)
    if header is None:
        raise FileNotFoundError(f"no feature cache in {folder}: run `sgmft extract` first")
    if not header.get("complete"):
        raise CacheCorruptError(f"the feature cache in {folder} is incomplete: run `sgmft extract`")
    table, ids, digests = None, None, None
    if header.get("ids_file"):
        path = folder / header["ids_file"]
        try:
            table = IdTable(path, ("id", "digest"))
        except IdTableCorruptError as exc:
            raise CacheCorruptError(f"{exc}: run `sgmft extract` to rebuild") from None
        if len(table) != header["posts"] or (verify and sha256_file(path) != header["ids_sha256"]):
            raise CacheCorruptError(f"{path} is corrupt: run `sgmft extract` to rebuild")
        count = len(table)
    else:   # a cache before ids.arrow: its ids in the header, its digests in digests.npy
        ids = header["ids"]
        count = len(ids)
        if header.get("digests"):
            path = folder / DIGESTS
            if not path.is_file() or (verify and sha256_file(path) != header["digests"]):
                raise CacheCorruptError(f"{path} is missing or corrupt: run `sgmft extract` to rebuild")
            digests = np.load(path, mmap_mode="r")
    size = header["chunk_size"]
    paths = [folder / chunk_name(index) for index in range(max(1, -(-count // size)))]
    for index, path in enumerate(paths):
        if not chunk_is_valid(folder, index, header, verify):
            raise CacheCorruptError(f"{path} is missing or corrupt: run `sgmft extract --verify` to rebuild")
    keys = ("text", "image", "text_tokens", "image_tokens") if header["encoder_identity"].get("sequences") \
        else ("text", "image")
    files = ChunkFiles(paths, size, count)
    arrays = {key: ChunkedArray(files, key, np.float32 if key in POOLED else None) for key in keys}
    return FeatureCache(ids, header=header, digests=digests, table=table, **arrays)
