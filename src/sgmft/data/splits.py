"""Train/test splits: the paper's stratified 80/20 (3,400 of 17,000), a per-user and a
per-group split, or the manifest's own ``split`` column; and the validation part carved from
the training split.

A split is a function of the manifest, the kind, the test fraction and the seed; it is saved
as JSON beside the data (see `work_dir`) so that every run and every table uses the same one.

Validation is carved by group (`carve_validation`): posts that share a ``group`` (else a
``user``), or the same image bytes, stay on one side, so that early stopping and every choice
made on validation reward what transfers to unseen events, users and images, not memory.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from sgmft.data.manifest import Manifest, Post
from sgmft.data.workdir import work_dir
from sgmft.io import atomic_write_json

KINDS = ("auto", "stratified", "user", "group", "manifest")
log = logging.getLogger(__name__)


def stratified_split(labels: list[str], test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask of a stratified split (each class keeps its share in test).

    Small data is split as well as it can be: a class with a single post stays in training,
    and the test part grows to one post per class when its share would hold fewer (both
    logged). With no class of two posts there is no test part to make: ValueError.
    """
    counts = Counter(labels)
    single = sorted(label for label, n in counts.items() if n < 2)
    index = np.asarray([i for i, label in enumerate(labels) if counts[label] >= 2])
    if not len(index):
        raise ValueError("no class has two posts, so no post can be held out for testing: add "
                         "posts, or give the manifest a 'split' column (train/test) to choose yourself")
    if single:
        log.warning("split: class(es) %s have a single post, kept in training (not tested)",
                    ", ".join(single))
    kept = [labels[i] for i in index]
    classes = len(set(kept))
    size = max(int(np.ceil(test_fraction * len(kept))), classes)
    if size > round(test_fraction * len(kept)):
        log.warning("split: the test part has %d of %d posts (more than %g) so that every class "
                    "has a post in it", size, len(labels), test_fraction)
    _, test = train_test_split(index, test_size=size, random_state=seed, stratify=kept)
    mask = np.zeros(len(labels), bool)
    mask[test] = True
    return mask


def group_split(labels: Sequence[str], groups: Sequence[str], test_fraction: float, seed: int,
                what: str = "group") -> np.ndarray:
    """Boolean test mask with no group on both sides, classes balanced as far as groups allow."""
    folds = max(2, round(1 / test_fraction))
    if len(set(groups)) < folds:
        raise ValueError(f"a per-{what} split with {folds} folds needs at least {folds} {what}s, "
                         f"the manifest has {len(set(groups))}")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    _, test = next(splitter.split(np.zeros(len(labels)), list(labels), groups=list(groups)))
    mask = np.zeros(len(labels), bool)
    mask[test] = True
    return mask


def resolve_kind(manifest: Manifest, kind: str) -> str:
    """``auto``: the manifest's own ``split`` column when its rows have one, else stratified."""
    if kind != "auto":
        return kind
    return "manifest" if any(p.split is not None for p in manifest.posts) else "stratified"


def make_split(manifest: Manifest, kind: str = "stratified", test_fraction: float = 0.2,
               seed: int = 0) -> dict[str, list[str]]:
    """``{"train": ids, "test": ids}`` (and ``"val"`` from a manifest) for a split of ``kind``."""
    posts = manifest.posts
    kind = resolve_kind(manifest, kind)
    if kind == "manifest":
        missing = [p for p in posts if p.split is None]
        if missing:
            rows = ", ".join(str(p.row) for p in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise ValueError(f"the manifest's split column is empty in {len(missing)} row(s) ({rows}); "
                             "give every row a split (train, val or test), or none to let sgmft split")
        return {name: [p.id for p in posts if p.split == name] for name in ("train", "val", "test")
                if any(p.split == name for p in posts)}
    labels = [p.label or "" for p in posts]
    if kind == "stratified":
        mask = stratified_split(labels, test_fraction, seed)
    elif kind in ("user", "group"):
        missing = [p.id for p in posts if getattr(p, kind) is None]
        if missing:
            raise ValueError(f"a per-{kind} split needs a {kind} on every row; {missing[0]!r} has none")
        mask = group_split(labels, [getattr(p, kind) for p in posts], test_fraction, seed, kind)
    else:
        raise ValueError(f"unknown split kind {kind!r}; expected one of {KINDS}")
    return {"train": [p.id for p, t in zip(posts, mask, strict=True) if not t],
            "test": [p.id for p, t in zip(posts, mask, strict=True) if t]}


def describe(split: dict[str, Any]) -> str:
    """A split in words, e.g. for a tables header."""
    sizes = ", ".join(f"{len(split[k])} {k}" for k in ("train", "val", "test") if split.get(k))
    if split["kind"] == "manifest":
        return f"the manifest's split column ({sizes})"
    fraction = split["test_fraction"]
    return f"{split['kind']} {1 - fraction:.0%}/{fraction:.0%}, seed {split['seed']} ({sizes})"


def load_or_make_split(manifest: Manifest, kind: str = "auto", test_fraction: float = 0.2,
                       seed: int = 0, folder: Path | None = None) -> dict[str, Any]:
    """The saved split of these settings and this data, else a new one, saved (and logged)."""
    folder = folder or work_dir(manifest.path)
    kind = resolve_kind(manifest, kind)
    data_hash = manifest.data_hash()
    settings = "" if kind == "manifest" else f"-{test_fraction:g}-seed{seed}"
    path = folder / f"split-{kind}{settings}-{data_hash[:12]}.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("data_hash") == data_hash:
            return {**saved, "path": str(path)}
    record = {"kind": kind, "test_fraction": test_fraction, "seed": seed, "data_hash": data_hash,
              "manifest": str(manifest.path), **make_split(manifest, kind, test_fraction, seed)}
    log.info("split: %s", describe(record))
    atomic_write_json(path, record)
    return {**record, "path": str(path)}


def _connected(keys: list[list[str]]) -> list[int]:
    """Union-find: posts sharing any key get one component id; (N,) ids."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, post_keys in enumerate(keys):
        for key in post_keys:
            if key in first:
                parent[root(i)] = root(first[key])
            else:
                first[key] = i
    return [root(i) for i in range(len(keys))]


def validation_groups(posts: Sequence[Post], by: str = "auto") -> tuple[list[int] | None, str]:
    """Group ids for carving validation, and what they are (None: no grouping).

    by: "auto" (``group`` when any post has one, else ``user``, and identical images always
    together), "group", "user", "image" (identical images only) or "stratified" (none).
    """
    if by == "stratified":
        return None, "stratified"
    field = by if by in ("group", "user") else None
    if by == "auto":
        field = next((f for f in ("group", "user") if any(getattr(p, f) for p in posts)), None)
    keys = [[f"image:{p.image_sha256}"] for p in posts]
    if field is not None:
        for post, post_keys in zip(posts, keys, strict=True):
            if getattr(post, field) is not None:
                post_keys.append(f"{field}:{getattr(post, field)}")
    what = f"{field}s and identical images" if field else "identical images"
    return _connected(keys), what


def carve_validation(posts: Sequence[Post], fraction: float, seed: int, by: str = "auto",
                     min_train_per_class: int = 2) -> tuple[list[str], list[str], str]:
    """(training ids, validation ids, how) from the training split's ``posts``.

    Grouped (see `validation_groups`) when there are enough groups, else stratified; a class
    with fewer than ``min_train_per_class`` + 1 posts stays wholly in training (logged).
    """
    counts = Counter(p.label for p in posts)
    kept = sorted(label for label, n in counts.items() if n <= min_train_per_class)
    if kept:
        log.warning("validation: class(es) %s have too few posts to spare any; they stay in training",
                    ", ".join(kept))
    candidates = [p for p in posts if p.label not in kept]
    groups, what = validation_groups(candidates, by)
    folds = max(2, round(1 / fraction))
    labels = [p.label for p in candidates]
    classes = len(set(labels))
    val, how = [], "none (too few posts)"
    enough = groups is not None and len(set(groups)) >= folds and max(Counter(labels).values()) >= folds
    if enough:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():   # small classes: balanced as far as they allow
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            _, index = next(splitter.split(np.zeros(len(candidates)), labels, groups))
        val, how = [candidates[i].id for i in index], f"by {what}"
    elif len(candidates) >= 2 * max(1, classes):
        if groups is not None and len(set(groups)) < len(candidates):
            log.warning("validation: %d groups of %s are too few to hold whole groups out; "
                        "stratified instead", len(set(groups)), what)
        size = min(max(round(fraction * len(candidates)), classes), len(candidates) - classes)
        _, picked = train_test_split(candidates, test_size=size, random_state=seed, stratify=labels)
        val, how = [p.id for p in picked], "stratified"
    chosen = set(val)
    return [p.id for p in posts if p.id not in chosen], val, how
