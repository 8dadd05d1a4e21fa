"""The on-disk feature cache: every post encoded once, in chunks, written atomically.

Layout of a cache folder::

    cache.json              header: encoder, manifest content hash, row ids, chunk hashes
    chunk-00000.safetensors {"text": (n, D_text), "image": (n, D_image)} float32, and with
                            sequences=True also {"text_tokens": (n, L_text, D_text),
                            "image_tokens": (n, L_image, D_image)} float16
    ...

`extract_features` resumes after a kill from the last finished chunk, reuses a complete
cache when nothing changed, rebuilds chunks whose bytes no longer match their recorded hash,
and refuses a cache built by another encoder or from another manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from sgmft.data.images import load_image
from sgmft.data.manifest import Manifest, Post
from sgmft.encoders.base import Encoder
from sgmft.io import atomic_write, atomic_write_json, sha256_file
from sgmft.provenance import now, versions

FORMAT_VERSION = 1
HEADER = "cache.json"


class CacheMismatchError(RuntimeError):
    """The folder holds a cache of another encoder or another manifest."""


class CacheCorruptError(RuntimeError):
    """A chunk is missing or its bytes do not match the hash recorded when it was written."""


@dataclass
class FeatureCache:
    """Features of every post of a manifest, in manifest order."""

    ids: list[str]
    text: np.ndarray
    image: np.ndarray
    header: dict[str, Any]
    text_tokens: np.ndarray | None = None    # (N, L_text, D_text) float16, sequence caches only
    image_tokens: np.ndarray | None = None   # (N, L_image, D_image) float16

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: list[str]) -> np.ndarray:
        """Row indices of ``ids`` in this cache (KeyError naming the first missing id)."""
        index = {post_id: i for i, post_id in enumerate(self.ids)}
        try:
            return np.asarray([index[post_id] for post_id in ids], dtype=np.int64)
        except KeyError as exc:
            raise KeyError(f"post {exc.args[0]!r} is not in the feature cache") from None


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}.safetensors"


def encoder_identity(name: str, options: dict[str, Any], sequences: bool = False) -> dict[str, Any]:
    """What a cache is checked against before an encoder is loaded: its name, its options, and
    whether token sequences are stored."""
    return {"name": name, "options": {k: options[k] for k in sorted(options)},
            "sequences": sequences}


def read_header(folder: Path) -> dict[str, Any] | None:
    """The cache header, or None when it is absent or unreadable (then the cache is rebuilt)."""
    try:
        header = json.loads((folder / HEADER).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) and header.get("format") == FORMAT_VERSION else None


def _chunk_is_valid(folder: Path, index: int, header: dict[str, Any]) -> bool:
    path = folder / chunk_name(index)
    expected = header.get("chunks", {}).get(str(index))
    return expected is not None and path.is_file() and sha256_file(path) == expected


def check_compatible(header: dict[str, Any], identity: dict[str, Any], manifest: Manifest,
                      folder: Path) -> None:
    """A cache serves a request of the same encoder and manifest; one with token sequences
    also serves a request without them."""
    cached = {"sequences": False, **header["encoder_identity"]}
    same_encoder = all(cached[k] == identity[k] for k in ("name", "options"))
    if same_encoder and identity["sequences"] and not cached["sequences"]:
        raise CacheMismatchError(
            f"{folder} holds pooled features only; token sequences were asked for: "
            "extract again with --sequences --overwrite, or choose another --out"
        )
    if not same_encoder:
        raise CacheMismatchError(
            f"{folder} holds features of encoder {header['encoder_identity']}, not {identity}; "
            "choose another --out or pass --overwrite"
        )
    if header["content_hash"] != manifest.content_hash():
        raise CacheMismatchError(
            f"{folder} holds features of another manifest ({header.get('manifest')}, "
            f"content hash {header['content_hash'][:12]}), not of {manifest.path}; "
            "choose another --out or pass --overwrite"
        )


def _new_header(manifest: Manifest, identity: dict[str, Any], chunk_size: int,
                text_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "encoder_identity": identity,
        "encoder": None,
        "manifest": str(manifest.path),
        "content_hash": manifest.content_hash(),
        "text_preprocessing": text_config,
        "dtype": "float32",
        "chunk_size": chunk_size,
        "ids": manifest.ids,
        "chunks": {},
        "complete": False,
        "created": now(),
        "versions": versions(),
    }


class _Memo:
    """Features already computed this run, so identical texts and images are encoded once.

    Each entry is a dict of arrays: "pooled", and "tokens" when sequences are stored.
    """

    def __init__(self) -> None:
        self.text: dict[str, dict[str, np.ndarray]] = {}
        self.image: dict[str, dict[str, np.ndarray]] = {}

    def remember(self, posts: list[Post], chunk: dict[str, np.ndarray]) -> None:
        for row, post in enumerate(posts):
            self.text.setdefault(post.clean_text, _entry(chunk, "text", row))
            self.image.setdefault(post.image_sha256, _entry(chunk, "image", row))


def _entry(chunk: dict[str, np.ndarray], modality: str, row: int) -> dict[str, np.ndarray]:
    entry = {"pooled": chunk[modality][row]}
    if f"{modality}_tokens" in chunk:
        entry["tokens"] = chunk[f"{modality}_tokens"][row]
    return entry


def _encode(encode, encode_with_tokens, items: list, sequences: bool) -> list[dict[str, np.ndarray]]:
    if not sequences:
        return [{"pooled": v} for v in encode(items)]
    pooled, tokens = encode_with_tokens(items)
    return [{"pooled": p, "tokens": t.astype(np.float16)} for p, t in zip(pooled, tokens, strict=True)]


def _encode_chunk(posts: list[Post], encoder: Encoder, memo: _Memo, batch_size: int,
                  pool: ThreadPoolExecutor, tick: Callable[[int], None],
                  sequences: bool) -> dict[str, np.ndarray]:
    """Features of one chunk of posts, encoding only texts and images not seen before."""
    new_texts = list(dict.fromkeys(p.clean_text for p in posts if p.clean_text not in memo.text))
    for start in range(0, len(new_texts), batch_size):
        batch = new_texts[start:start + batch_size]
        encoded = _encode(encoder.encode_texts, encoder.encode_texts_with_tokens, batch, sequences)
        memo.text.update(zip(batch, encoded, strict=True))
    new_images = {p.image_sha256: p.image for p in posts if p.image_sha256 not in memo.image}
    shas = list(new_images)
    for start in range(0, len(shas), batch_size):
        batch = shas[start:start + batch_size]
        images = list(pool.map(load_image, [new_images[sha] for sha in batch]))
        encoded = _encode(encoder.encode_images, encoder.encode_images_with_tokens, images, sequences)
        memo.image.update(zip(batch, encoded, strict=True))
        tick(len(batch))
    tick(len(posts) - len(shas))
    texts = [memo.text[p.clean_text] for p in posts]
    images = [memo.image[p.image_sha256] for p in posts]
    chunk = {"text": np.stack([t["pooled"] for t in texts]).astype(np.float32),
             "image": np.stack([i["pooled"] for i in images]).astype(np.float32)}
    if sequences:
        chunk["text_tokens"] = np.stack([t["tokens"] for t in texts]).astype(np.float16)
        chunk["image_tokens"] = np.stack([i["tokens"] for i in images]).astype(np.float16)
    return chunk


def extract_features(
    manifest: Manifest,
    out: str | Path,
    encoder_name: str,
    encoder_options: dict[str, Any] | None = None,
    encoder_factory: Callable[..., Encoder] | None = None,
    batch_size: int = 32,
    chunk_size: int = 1024,
    overwrite: bool = False,
    progress: bool = True,
    text_config: dict[str, Any] | None = None,
    device: str = "cpu",
    sequences: bool = False,
) -> FeatureCache:
    """Encode every post of ``manifest`` into the cache folder ``out`` and return the cache.

    encoder_options: what determines the features (a checkpoint, say); recorded and checked.
    encoder_factory: builds the encoder from ``encoder_options`` and ``device`` (default: the
        registry entry ``encoder_name``); it is only called when some chunk needs encoding.
    sequences: also store the encoders' token states (for the model's sequence reading).
    """
    from sgmft.encoders import create_encoder

    if not manifest.posts:
        raise ValueError(f"{manifest.path} has no valid posts to encode")
    folder = Path(out)
    options = dict(encoder_options or {})
    identity = encoder_identity(encoder_name, options, sequences)
    header = read_header(folder)
    if header is not None and overwrite:
        header = None
    if header is not None:
        check_compatible(header, identity, manifest, folder)
        chunk_size = header["chunk_size"]
        sequences = bool(header["encoder_identity"].get("sequences", False))  # chunks stay alike
    else:
        for stale in folder.glob("chunk-*.safetensors"):
            stale.unlink()
        header = _new_header(manifest, identity, chunk_size, text_config or {})

    posts = manifest.posts
    n_chunks = max(1, -(-len(posts) // chunk_size))
    todo = [i for i in range(n_chunks) if not _chunk_is_valid(folder, i, header)]
    if not todo:
        if not header["complete"]:
            header["complete"] = True
            atomic_write_json(folder / HEADER, header)
        return load_cache(folder)

    factory = encoder_factory or (lambda **kw: create_encoder(encoder_name, **kw))
    encoder = factory(device=device, **options)
    header["encoder"] = encoder.config()
    header["dims"] = {"text": encoder.dim.text, "image": encoder.dim.image}
    header["shared_space"] = encoder.shared_space
    header["complete"] = False
    for index in todo:
        header["chunks"].pop(str(index), None)
    atomic_write_json(folder / HEADER, header)

    memo = _Memo()
    done = [i for i in range(n_chunks) if i not in todo]
    for index in done:  # identical images in finished chunks need no second encoding
        memo.remember(posts[index * chunk_size:(index + 1) * chunk_size],
                      load_file(folder / chunk_name(index)))
    remaining = sum(len(posts[i * chunk_size:(i + 1) * chunk_size]) for i in todo)
    bar = tqdm(total=len(posts), initial=len(posts) - remaining, desc="extract", unit="post",
               disable=not progress)
    with ThreadPoolExecutor(max_workers=4) as pool:
        for index in todo:
            chunk_posts = posts[index * chunk_size:(index + 1) * chunk_size]
            tensors = _encode_chunk(chunk_posts, encoder, memo, batch_size, pool, bar.update,
                                    sequences)
            path = folder / chunk_name(index)
            meta = {"first": str(index * chunk_size), "count": str(len(chunk_posts))}
            atomic_write(path, lambda tmp, t=tensors, m=meta: save_file(t, str(tmp), metadata=m))
            header["chunks"][str(index)] = sha256_file(path)
            if sequences:
                header["token_shapes"] = {m: list(tensors[f"{m}_tokens"].shape[1:])
                                          for m in ("text", "image")}
            atomic_write_json(folder / HEADER, header)
    bar.close()
    header["complete"] = True
    header["finished"] = now()
    atomic_write_json(folder / HEADER, header)
    return load_cache(folder)


def load_cache(folder: str | Path) -> FeatureCache:
    """Read a complete cache, checking every chunk against its recorded hash."""
    folder = Path(folder)
    header = read_header(folder)
    if header is None:
        raise FileNotFoundError(f"no feature cache in {folder}: run `sgmft extract` first")
    if not header.get("complete"):
        raise CacheCorruptError(f"the feature cache in {folder} is incomplete: run `sgmft extract`")
    size, ids = header["chunk_size"], header["ids"]
    parts: dict[str, list[np.ndarray]] = {}
    for index in range(max(1, -(-len(ids) // size))):
        if not _chunk_is_valid(folder, index, header):
            raise CacheCorruptError(
                f"{folder / chunk_name(index)} is missing or corrupt: run `sgmft extract` to rebuild"
            )
        for key, value in load_file(folder / chunk_name(index)).items():
            parts.setdefault(key, []).append(value)
    arrays = {key: np.concatenate(values) for key, values in parts.items()}
    return FeatureCache(ids=list(ids), header=header, **arrays)
