"""The extraction plan: which texts and images each chunk encodes, and in which batches.

A feature depends on its input and, in the last bits, on the batch it is computed in (an image
encoder's kernels depend on the batch size, a text encoder pads to the longest text of its
batch) and on the number of threads. Byte-identical caches (a resumed run, a local and a Ray
extraction) therefore need identical batches: the plan fixes them from the manifest alone.
Chunk k encodes the distinct texts and images whose first post is in chunk k, in order of first
appearance, in batches of ``batch_size``; a later post with the same text or image bytes reuses
that feature (each is encoded once). Both ways of extracting run `encode_job` on the same jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from sgmft.data.manifest import Post
from sgmft.encoders.base import Encoder

MODALITIES = ("text", "image")


def post_key(post: Post, modality: str) -> str:
    """What identifies a post's input: its cleaned text, or its image's SHA-256."""
    return post.clean_text if modality == "text" else post.image_sha256


@dataclass(frozen=True)
class Job:
    """One encoder call: a batch of distinct texts or images first seen in ``chunk``."""

    chunk: int
    modality: str
    keys: tuple[str, ...]        # cleaned texts, or image SHA-256s
    sources: tuple[str, ...]     # the texts, or the image paths


@dataclass
class Plan:
    chunk_size: int
    chunks: list[Sequence[Post]]    # slices of the posts (of a `PostTable`: no post objects held)
    jobs: dict[int, list[Job]]
    first: dict[tuple[str, str], int] = field(default_factory=dict)   # (modality, key) -> chunk


def make_plan(posts: Sequence[Post], chunk_size: int, batch_size: int) -> Plan:
    """The jobs of every chunk (see the module docstring)."""
    chunks = [posts[i:i + chunk_size] for i in range(0, max(1, len(posts)), chunk_size)]
    plan = Plan(chunk_size, chunks, {})
    for index, chunk in enumerate(chunks):
        plan.jobs[index] = []
        for modality in MODALITIES:
            new: dict[str, str] = {}
            for post in chunk:
                key = post_key(post, modality)
                if (modality, key) not in plan.first:
                    plan.first[modality, key] = index
                    new[key] = post.clean_text if modality == "text" else str(post.image)
            keys = list(new)
            plan.jobs[index] += [Job(index, modality, tuple(keys[i:i + batch_size]),
                                     tuple(new[k] for k in keys[i:i + batch_size]))
                                 for i in range(0, len(keys), batch_size)]
    return plan


Entry = dict[str, np.ndarray]     # "pooled" (D,), and "tokens" (L, D) float16 with sequences


def encode_job(encoder: Encoder, job: Job, sequences: bool,
               images: Sequence[Image.Image] | None = None) -> list[Entry]:
    """The features of one job. ``images``: the job's images, decoded (and resized to the
    encoder's input) by the caller; texts are taken from the job itself."""
    items = list(job.sources) if job.modality == "text" else list(images or [])
    if not sequences:
        pooled = getattr(encoder, f"encode_{job.modality}s")(items)
        return [{"pooled": np.asarray(p, np.float32)} for p in pooled]
    pooled, tokens = getattr(encoder, f"encode_{job.modality}s_with_tokens")(items)
    return [{"pooled": np.asarray(p, np.float32), "tokens": np.asarray(t).astype(np.float16)}
            for p, t in zip(pooled, tokens, strict=True)]


class Memo:
    """Features computed or read this run, kept until the last chunk still to write needs them."""

    def __init__(self, plan: Plan, todo: Sequence[int]):
        self.entries: dict[tuple[str, str], Entry] = {}
        self.last_need: dict[tuple[str, str], int] = {}
        for index in todo:
            for post in plan.chunks[index]:
                for modality in MODALITIES:
                    self.last_need[modality, post_key(post, modality)] = index

    def needed(self, modality: str, key: str) -> bool:
        return (modality, key) in self.last_need

    def put(self, modality: str, key: str, entry: Entry) -> None:
        self.entries[modality, key] = entry

    def remember_chunk(self, posts: Sequence[Post], tensors: dict[str, np.ndarray],
                       first_here: Callable[[str, str], bool]) -> None:
        """Keep the features of a finished chunk's first-seen inputs that a chunk to write needs."""
        for row, post in enumerate(posts):
            for modality in MODALITIES:
                key = post_key(post, modality)
                if first_here(modality, key) and self.needed(modality, key):
                    entry = {"pooled": tensors[modality][row]}
                    if f"{modality}_tokens" in tensors:
                        entry["tokens"] = tensors[f"{modality}_tokens"][row]
                    self.put(modality, key, entry)

    def assemble(self, posts: Sequence[Post], sequences: bool) -> dict[str, np.ndarray]:
        """The tensors of one chunk, in post order."""
        tensors = {}
        for modality in MODALITIES:
            entries = [self.entries[modality, post_key(p, modality)] for p in posts]
            tensors[modality] = np.stack([e["pooled"] for e in entries]).astype(np.float32)
            if sequences:
                tensors[f"{modality}_tokens"] = np.stack([e["tokens"] for e in entries]).astype(np.float16)
        return tensors

    def release(self, chunk: int) -> None:
        """Forget what no chunk after ``chunk`` still needs."""
        done = [k for k, last in self.last_need.items() if last <= chunk]
        for key in done:
            self.entries.pop(key, None)
            del self.last_need[key]
