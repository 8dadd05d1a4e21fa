"""Train/test splits: the paper's stratified 80/20 (3,400 of 17,000) and a per-user split.

A split is a function of the manifest, the kind, the test fraction and the seed; it is saved
as JSON beside the data (see `work_dir`) so that every run and every table uses the same one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from sgmft.data.manifest import Manifest
from sgmft.io import atomic_write_json

KINDS = ("stratified", "user", "manifest")


def work_dir(manifest: Manifest) -> Path:
    """Where derived data of a manifest goes: ``<manifest folder>/.sgmft`` when writable,
    else ``$SGMFT_CACHE`` or ``~/.cache/sgmft``, in a folder named by the content hash."""
    beside = manifest.path.parent / ".sgmft"
    if os.environ.get("SGMFT_CACHE"):
        return Path(os.environ["SGMFT_CACHE"]) / manifest.content_hash()[:16]
    if os.access(manifest.path.parent, os.W_OK):
        return beside
    return Path.home() / ".cache" / "sgmft" / manifest.content_hash()[:16]


def stratified_split(labels: list[str], test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask of a stratified split (each class keeps its share in test)."""
    classes = len(set(labels))
    if int(np.ceil(test_fraction * len(labels))) < classes or len(labels) - classes < classes:
        raise ValueError(f"a stratified {test_fraction:g} test split of {len(labels)} posts cannot "
                         f"hold all {classes} classes on both sides: add posts or raise the fraction")
    index = np.arange(len(labels))
    _, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=labels)
    mask = np.zeros(len(labels), bool)
    mask[test] = True
    return mask


def user_split(labels: list[str], users: list[str], test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask with no user on both sides, classes balanced as far as users allow."""
    folds = max(2, round(1 / test_fraction))
    if len(set(users)) < folds:
        raise ValueError(f"a per-user split with {folds} folds needs at least {folds} users, "
                         f"the manifest has {len(set(users))}")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    _, test = next(splitter.split(np.zeros(len(labels)), labels, groups=users))
    mask = np.zeros(len(labels), bool)
    mask[test] = True
    return mask


def make_split(manifest: Manifest, kind: str = "stratified", test_fraction: float = 0.2,
               seed: int = 0) -> dict[str, list[str]]:
    """``{"train": ids, "test": ids}`` for a split of ``kind`` (see KINDS)."""
    posts = manifest.posts
    if kind == "manifest":
        missing = [p.id for p in posts if p.split is None]
        if missing:
            raise ValueError(f"split kind 'manifest' needs a split on every row; {missing[0]!r} "
                             f"and {len(missing) - 1} more have none")
        return {name: [p.id for p in posts if p.split == name] for name in ("train", "val", "test")
                if any(p.split == name for p in posts)}
    labels = [p.label or "" for p in posts]
    if kind == "stratified":
        mask = stratified_split(labels, test_fraction, seed)
    elif kind == "user":
        missing = [p.id for p in posts if p.user is None]
        if missing:
            raise ValueError(f"a per-user split needs a user on every row; {missing[0]!r} has none")
        mask = user_split(labels, [p.user for p in posts], test_fraction, seed)  # type: ignore[misc]
    else:
        raise ValueError(f"unknown split kind {kind!r}; expected one of {KINDS}")
    return {"train": [p.id for p, t in zip(posts, mask, strict=True) if not t],
            "test": [p.id for p, t in zip(posts, mask, strict=True) if t]}


def load_or_make_split(manifest: Manifest, kind: str = "stratified", test_fraction: float = 0.2,
                       seed: int = 0, folder: Path | None = None) -> dict[str, Any]:
    """The saved split of these settings when it matches the data, else a new one, saved."""
    folder = folder or work_dir(manifest)
    path = folder / f"split-{kind}-{test_fraction:g}-seed{seed}.json"
    data_hash = manifest.data_hash()
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("data_hash") == data_hash:
            return {**saved, "path": str(path)}
    record = {"kind": kind, "test_fraction": test_fraction, "seed": seed, "data_hash": data_hash,
              "manifest": str(manifest.path), **make_split(manifest, kind, test_fraction, seed)}
    atomic_write_json(path, record)
    return {**record, "path": str(path)}
