"""The on-disk feature cache: every post encoded once, in chunks, written atomically (its layout
and how it is opened: `sgmft.encoders.store`).

`extract_features` resumes after a kill from the last finished chunk, reuses a complete
cache when nothing changed, rebuilds chunks whose bytes no longer match their recorded hash,
and refuses a cache built by another encoder or from another manifest. What is encoded in
which batch follows `sgmft.encoders.plan`, so the same data gives the same chunk bytes (and
SHA-256s) every time; `sgmft.encoders.ray_extract` fills the same cache on a Ray cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.numpy import load_file, save_file

from sgmft.data.images import PixelBudget, load_resized
from sgmft.data.manifest import Manifest
from sgmft.encoders.base import Encoder
from sgmft.encoders.chunks import chunk_is_valid, chunk_name, record_chunk
from sgmft.encoders.plan import Job, Memo, Plan, encode_job, make_plan
from sgmft.encoders.store import (
    CHUNK_MIB,
    DIGESTS,
    FORMAT_VERSION,
    HEADER,
    IDS,
    CacheCorruptError,
    CacheMismatchError,
    FeatureCache,
    check_dtype,
    load_cache,
    read_header,
    rows_per_chunk,
    stored_as,
    write_ids,
)
from sgmft.io import (
    atomic_write,
    atomic_write_json,
    check_writable,
    folder_lock,
    remove_stale_temp_files,
)
from sgmft.limits import LIMITS
from sgmft.progress import progress_bar
from sgmft.provenance import now, versions
from sgmft.words import plural

log = logging.getLogger(__name__)

#: what the rest of the package imports from here (the store's names, for the cache as one place)
__all__ = ["CHUNK_MIB", "FORMAT_VERSION", "HEADER", "IDS", "IMPORTED", "CacheCorruptError",
           "CacheMismatchError", "FeatureCache", "check_compatible", "check_dtype", "chunk_name",
           "encoder_chunk_rows", "encoder_identity", "encoder_info", "extract_features", "extraction",
           "load_cache", "read_header", "rows_per_chunk", "stored_as", "write_ids"]

#: the encoder name of features imported from a file (`sgmft.encoders.imported`)
IMPORTED = "imported"


def encoder_identity(name: str, options: dict[str, Any], sequences: bool = False) -> dict[str, Any]:
    """What a cache is checked against before an encoder is loaded: its name, its options, and
    whether token sequences are stored."""
    return {"name": name, "options": {k: options[k] for k in sorted(options)},
            "sequences": sequences}


def check_compatible(header: dict[str, Any], identity: dict[str, Any], manifest: Manifest,
                      folder: Path) -> None:
    """A cache serves a request of the same encoder and manifest; one with token sequences
    also serves a request without them."""
    cached = {"sequences": False, **header["encoder_identity"]}
    same_encoder = cached["name"] == identity["name"] and _options(cached) == _options(identity)
    if same_encoder and identity["sequences"] and not cached["sequences"]:
        raise CacheMismatchError(
            f"{folder} holds pooled features only; token sequences were asked for: "
            "extract again with --sequences --overwrite, or use another cache folder "
            "(extract --out, train --cache)"
        )
    if not same_encoder:
        raise CacheMismatchError(
            f"{folder} holds features of encoder {header['encoder_identity']}, not {identity}; "
            "use another cache folder (extract --out, train --cache) or replace it (extract --overwrite)"
        )
    if header["content_hash"] != manifest.content_hash():
        raise CacheMismatchError(
            f"{folder} holds features of another manifest ({header.get('manifest')}, "
            f"content hash {header['content_hash'][:12]}), not of {manifest.path}; "
            "use another cache folder (extract --out, train --cache) or replace it (extract --overwrite)"
        )


def _options(identity: dict[str, Any]) -> dict[str, Any]:
    """An identity's options that decide the features: not the arithmetic (caches written before
    it moved out of the identity name it there)."""
    return {k: v for k, v in identity["options"].items() if k != "precision"}


def _new_header(manifest: Manifest, identity: dict[str, Any], chunk_size: int, batch_size: int,
                text_config: dict[str, Any], dtype: str = "float32") -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "encoder_identity": identity,
        "encoder": None,
        "manifest": str(manifest.path),
        "content_hash": manifest.content_hash(),
        "text_preprocessing": text_config,
        "dtype": dtype,
        "chunk_size": chunk_size,
        "batch_size": batch_size,
        "posts": len(manifest.posts),
        "chunks": {},
        "complete": False,
        "created": now(),
        "versions": versions(),
    }


def _load_images(job: Job, encoder: Encoder, pool: ThreadPoolExecutor, budget: PixelBudget) -> list:
    preprocess = encoder.image_preprocess
    return list(pool.map(lambda path: load_resized(path, preprocess, budget), job.sources))


def encoder_info(encoder: Encoder) -> dict[str, Any]:
    """What a cache header records of the encoder that filled it (and of its threads, which
    change the last bits of the features)."""
    return {"encoder": encoder.config(), "dims": {"text": encoder.dim.text, "image": encoder.dim.image},
            "shared_space": encoder.shared_space, "torch_threads": torch.get_num_threads()}


@dataclass
class Extraction:
    """One extraction into a cache folder: its header, plan and the chunks still to write."""

    folder: Path
    header: dict[str, Any]
    plan: Plan
    todo: list[int]

    @property
    def sequences(self) -> bool:
        return bool(self.header["encoder_identity"].get("sequences", False))

    def start(self, info: dict[str, Any]) -> Memo:
        """Record the encoder, forget the chunks about to be (re)written, and return a memo
        holding what they need from the chunks already written."""
        self.header.update(info, complete=False)
        for index in self.todo:
            self.header["chunks"].pop(str(index), None)
        atomic_write_json(self.folder / HEADER, self.header)
        memo = Memo(self.plan, self.todo)
        for index in range(len(self.plan.chunks)):
            if index not in self.todo:
                memo.remember_chunk(self.plan.chunks[index], load_file(self.folder / chunk_name(index)),
                                    lambda m, k, i=index: self.plan.first[m, k] == i)
        return memo

    def write(self, index: int, memo: Memo) -> None:
        """Write a chunk atomically and record its hash (no safetensors metadata: its key order
        is not stable, and the same features must give the same bytes)."""
        tensors = stored_as(memo.assemble(self.plan.chunks[index], self.sequences),
                            self.header.get("dtype", "float32"))
        path = self.folder / chunk_name(index)
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
        record_chunk(self.header, index, path)
        if self.sequences:
            self.header["token_shapes"] = {m: list(tensors[f"{m}_tokens"].shape[1:])
                                           for m in ("text", "image")}
        atomic_write_json(self.folder / HEADER, self.header)
        memo.release(index)

    def finish(self, manifest: Manifest) -> FeatureCache:
        if self.todo or not self.header["complete"] or "ids_file" not in self.header \
                or not (self.folder / IDS).is_file():
            for old in ("ids", "digests"):   # a cache before ids.arrow, extended
                self.header.pop(old, None)
            (self.folder / DIGESTS).unlink(missing_ok=True)
            self.header.update(write_ids(self.folder, manifest))
            self.header["complete"] = True
            self.header["finished"] = now()
            atomic_write_json(self.folder / HEADER, self.header)
        return load_cache(self.folder)


def encoder_chunk_rows(encoder: Encoder, sequences: bool, dtype: str, mib: float = CHUNK_MIB) -> int:
    """Posts per chunk of ``mib`` MiB for ``encoder``'s features (`rows_per_chunk`); with
    ``sequences`` the token states' lengths are read from encoding one probe text and image."""
    shapes = None
    if sequences:
        _, text = encoder.encode_texts_with_tokens(["probe"])
        _, image = encoder.encode_images_with_tokens([Image.new("RGB", (64, 64))])
        shapes = {"text": text.shape[1:], "image": image.shape[1:]}
    return rows_per_chunk({"text": encoder.dim.text, "image": encoder.dim.image}, dtype, shapes, mib)


@contextmanager
def extraction(manifest: Manifest, out: str | Path, identity: dict[str, Any], overwrite: bool,
               chunk_size: int | Callable[[], int], batch_size: int, text_config: dict[str, Any],
               verify: bool = False, dtype: str | None = None) -> Iterator[Extraction]:
    """Claim the cache folder (fail early if it cannot be written, lock it, clear killed
    writers' temp files) and open or start its cache for this request; the chunks to (re)write
    are those missing or of another size (with ``verify``: or of another SHA-256). A new cache's
    posts per chunk are ``chunk_size``, or what it returns when it is a function (called only
    then: an existing cache keeps its own)."""
    if not manifest.posts:
        raise ValueError(f"{manifest.path} has no valid posts to encode")
    folder = Path(out)
    check_writable(folder)
    with folder_lock(folder, "sgmft extract"):
        remove_stale_temp_files(folder)
        header = None if overwrite else read_header(folder)
        if header is not None:
            check_compatible(header, identity, manifest, folder)
            check_dtype(header, dtype, folder)
        else:
            for stale in folder.glob("chunk-*.safetensors"):
                stale.unlink()
            rows = chunk_size() if callable(chunk_size) else chunk_size
            header = _new_header(manifest, identity, rows, batch_size, text_config, dtype or "float32")
        plan = make_plan(manifest.posts, header["chunk_size"], header.get("batch_size", batch_size))
        todo = [i for i in range(len(plan.chunks)) if not chunk_is_valid(folder, i, header, verify)]
        if verify and header.get("complete"):
            log.info("verified %s of %s by their SHA-256: %s to rebuild", plural(len(plan.chunks), "chunk"),
                     folder, len(todo))
        yield Extraction(folder, header, plan, todo)


def extract_features(
    manifest: Manifest,
    out: str | Path,
    encoder_name: str,
    encoder_options: dict[str, Any] | None = None,
    encoder_factory: Callable[..., Encoder] | None = None,
    batch_size: int = 32,
    chunk_size: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    text_config: dict[str, Any] | None = None,
    device: str = "cpu",
    sequences: bool = False,
    precision: str = "fp32",
    verify: bool = False,
    dtype: str | None = None,
    chunk_mib: float = CHUNK_MIB,
) -> FeatureCache:
    """Encode every post of ``manifest`` into the cache folder ``out`` and return the cache.

    encoder_options: what determines the features (a checkpoint, say); recorded and checked.
    encoder_factory: builds the encoder from ``encoder_options`` and ``device`` (default: the
        registry entry ``encoder_name``); it is only called when some chunk needs encoding.
    sequences: also store the encoders' token states (for the model's sequence reading).
    precision: the encoders' arithmetic (fp32, bf16, fp16), recorded in the header.
    verify: check every chunk already there by its SHA-256 (a full read; else by its size), and
        rebuild those that differ.
    dtype: how the pooled features are stored: float32, or float16 (half the bytes); None:
        float32 for a new cache, as stored for an existing one.
    chunk_size: posts per chunk file of a new cache; None: as many as fill ``chunk_mib`` MiB
        (`encoder_chunk_rows`; the encoder is then built before the plan).
    The folder is locked while this runs: a second extraction into it waits.
    """
    from sgmft.encoders import create_encoder

    options = dict(encoder_options or {})
    identity = encoder_identity(encoder_name, options, sequences)
    factory = encoder_factory or (lambda **kw: create_encoder(encoder_name, **kw))
    built: list[Encoder] = []

    def encoder_now() -> Encoder:
        if not built:
            built.append(factory(device=device, precision=precision, **options))
        return built[0]

    def by_bytes() -> int:
        return encoder_chunk_rows(encoder_now(), sequences, dtype or "float32", chunk_mib)

    with extraction(manifest, out, identity, overwrite, chunk_size or by_bytes, batch_size,
                    text_config or {}, verify, dtype) as job:
        if not job.todo:
            log.info("the features of all %s were in %s already: reused, nothing encoded",
                     plural(len(manifest.posts), "post"), out)
            return job.finish(manifest)
        encoder = encoder_now()
        memo = job.start(encoder_info(encoder) | {"precision": precision})
        budget = PixelBudget(LIMITS.batch_pixels)
        remaining = sum(len(job.plan.chunks[i]) for i in job.todo)
        if remaining < len(manifest.posts):
            log.info("the features of %s were in %s already: reused; encoding the other %d",
                     plural(len(manifest.posts) - remaining, "post"), out, remaining)
        bar = progress_bar(len(manifest.posts), "extract", "post", disable=not progress,
                           initial=len(manifest.posts) - remaining)
        with ThreadPoolExecutor(max_workers=4) as pool:
            for index in job.todo:
                for work in job.plan.jobs[index]:
                    images = _load_images(work, encoder, pool, budget) if work.modality == "image" else None
                    for key, entry in zip(work.keys, encode_job(encoder, work, job.sequences, images),
                                          strict=True):
                        memo.put(work.modality, key, entry)
                job.write(index, memo)
                bar.update(len(job.plan.chunks[index]))
        bar.close()
        return job.finish(manifest)


