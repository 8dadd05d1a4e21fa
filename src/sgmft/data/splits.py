"""Train/test splits: the paper's stratified 80/20 (3,400 of 17,000), a per-user and a
per-group split (any column: ``group_by``), or the manifest's own ``split`` column.

Identical and near-duplicate images (`sgmft.data.groups`) never straddle a split that sgmft
makes: the stratified split draws whole image groups (a re-posted photo and its resized copies
go to one side), and the user and group splits join image groups with the column's.

A split is a function of the manifest, the kind, the test fraction, the seed and the grouping
column; it is saved as JSON beside the data (see `work_dir`) so that every run and every table
uses the same one. The validation folds inside the training split are `sgmft.data.folds`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sgmft.data.groups import GROUPING, NEAR_DUPLICATE_BITS, post_groups
from sgmft.data.manifest import Manifest
from sgmft.data.workdir import work_dir
from sgmft.io import atomic_write_json

KINDS = ("auto", "stratified", "user", "group", "manifest")
log = logging.getLogger(__name__)


def stratified_split(labels: list[str], test_fraction: float, seed: int,
                     unit: tuple[str, str] = ("post", "posts")) -> np.ndarray:
    """Boolean test mask of a stratified split (each class keeps its share in test).

    Small data is split as well as it can be: a class with a single post stays in training,
    and the test part grows to one post per class when its share would hold fewer (both
    logged). With no class of two posts there is no test part to make: ValueError. ``unit``
    names what is split in the log, singular and plural (posts, or groups of them).
    """
    counts = Counter(labels)
    single = sorted(label for label, n in counts.items() if n < 2)
    index = np.asarray([i for i, label in enumerate(labels) if counts[label] >= 2])
    if not len(index):
        raise ValueError("no class has two posts, so no post can be held out for testing: add "
                         "posts, or give the manifest a 'split' column (train/test) to choose yourself")
    if single:
        log.warning("split: class(es) %s have a single %s, kept in training (not tested)",
                    ", ".join(single), unit[0])
    kept = [labels[i] for i in index]
    classes = len(set(kept))
    asked = int(np.ceil(test_fraction * len(kept)))
    size = max(asked, classes)
    if size > asked:
        log.warning("split: the test part holds %d of the %d %s, more than the %.0f %% asked, so that each "
                    "of the %d labels has one in it", size, len(labels), unit[1], 100 * test_fraction,
                    classes)
    from sklearn.model_selection import train_test_split  # here: scikit-learn takes seconds to import

    _, test = train_test_split(index, test_size=size, random_state=seed, stratify=kept)
    mask = np.zeros(len(labels), bool)
    mask[test] = True
    return mask


def grouped_stratified_split(labels: Sequence[str], groups: Sequence[int], test_fraction: float,
                             seed: int) -> np.ndarray:
    """Boolean test mask of a stratified split of whole groups (each labelled by its most common
    label): `stratified_split` over the groups, so that no group straddles the split. With
    every group a single post this is `stratified_split` itself."""
    members: dict[int, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    order = list(members)
    group_labels = [Counter(labels[i] for i in members[g]).most_common(1)[0][0] for g in order]
    unit = ("post", "posts") if len(order) == len(labels) else \
        ("image group", "image groups (posts whose images are copies of one photo count as one)")
    try:
        chosen = stratified_split(group_labels, test_fraction, seed, unit)
    except ValueError:
        raise ValueError(coarse_groups(labels, len(order))) from None
    mask = np.zeros(len(labels), bool)
    for group, test in zip(order, chosen, strict=True):
        mask[members[group]] = test
    return mask


def coarse_groups(labels: Sequence[str], groups: int) -> str:
    """Why a split of ``labels`` in ``groups`` image groups cannot be made, in a user's words."""
    return (f"the {len(labels)} posts fall into only {groups} group(s) of near-duplicate images (the same "
            "photo, or a resized, re-encoded or lightly cropped copy of it, by perceptual hash and colour "
            "layout), and a group never straddles the split, so no label has two groups to split between "
            "training and test: add posts with other images, or give the manifest a 'split' column "
            "(train/test) to choose yourself")


def group_split(labels: Sequence[str], groups: Sequence[object], test_fraction: float, seed: int,
                what: str = "group") -> np.ndarray:
    """Boolean test mask with no group on both sides, classes balanced as far as groups allow."""
    folds = max(2, round(1 / test_fraction))
    if len(set(groups)) < folds:
        raise ValueError(f"a per-{what} split with {folds} folds needs at least {folds} {what}s, "
                         f"the manifest has {len(set(groups))}")
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    _, test = next(splitter.split(np.zeros(len(labels)), list(labels), groups=list(groups)))
    mask = np.zeros(len(labels), bool)
    mask[test] = True
    return mask


def resolve_kind(manifest: Manifest, kind: str) -> str:
    """``auto``: the manifest's own ``split`` column when its rows have one, else stratified."""
    if kind != "auto":
        return kind
    return "manifest" if "split" in manifest.columns else "stratified"


def make_split(manifest: Manifest, kind: str = "stratified", test_fraction: float = 0.2,
               seed: int = 0, group_by: str = "group") -> dict[str, list[str]]:
    """``{"train": ids, "test": ids}`` (and ``"val"`` from a manifest) for a split of ``kind``;
    ``group_by`` is the column of the ``group`` kind."""
    posts, ids = manifest.posts, manifest.ids
    kind = resolve_kind(manifest, kind)
    if kind == "manifest":
        parts = posts.column("split")
        missing = [row for row, part in zip(posts.column("row"), parts, strict=True) if part is None]
        if missing:
            rows = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise ValueError(f"the manifest's split column is empty in {len(missing)} row(s) ({rows}); "
                             "give every row a split (train, val or test), or none to let sgmft split")
        named = {name: [i for i, part in zip(ids, parts, strict=True) if part == name]
                 for name in ("train", "val", "test")}
        return {name: chosen for name, chosen in named.items() if chosen}
    labels = [label or "" for label in posts.column("label")]
    if kind == "stratified":
        mask = grouped_stratified_split(labels, post_groups(posts), test_fraction, seed)
    elif kind in ("user", "group"):
        column = "user" if kind == "user" else group_by
        missing = [i for i, value in zip(ids, posts.column(column), strict=True) if value is None]
        if missing:
            raise ValueError(f"a per-{column} split needs a {column!r} value on every row; "
                             f"{missing[0]!r} has none")
        mask = group_split(labels, post_groups(posts, column), test_fraction, seed, column)
    else:
        raise ValueError(f"unknown split kind {kind!r}; expected one of {KINDS}")
    return {"train": [i for i, t in zip(ids, mask, strict=True) if not t],
            "test": [i for i, t in zip(ids, mask, strict=True) if t]}


def describe(split: dict[str, Any]) -> str:
    """A split in words, e.g. for a tables header."""
    sizes = ", ".join(f"{len(split[k])} {k}" for k in ("train", "val", "test") if split.get(k))
    if split["kind"] == "manifest":
        return f"the manifest's split column ({sizes})"
    fraction = split["test_fraction"]
    kind = f"group ({split['group_by']})" if split["kind"] == "group" else split["kind"]
    return f"{kind} {1 - fraction:.0%}/{fraction:.0%}, seed {split['seed']} ({sizes})"


def load_or_make_split(manifest: Manifest, kind: str = "auto", test_fraction: float = 0.2,
                       seed: int = 0, folder: Path | None = None, group_by: str = "group") -> dict[str, Any]:
    """The saved split of these settings and this data, else a new one, saved (and logged)."""
    folder = folder or work_dir(manifest.path)
    kind = resolve_kind(manifest, kind)
    data_hash = manifest.data_hash()
    column = f"-{group_by}" if kind == "group" else ""
    settings = "" if kind == "manifest" else \
        f"{column}-{test_fraction:g}-seed{seed}-nd{NEAR_DUPLICATE_BITS}-{GROUPING}"
    path = folder / f"split-{kind}{settings}-{data_hash[:12]}.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("data_hash") == data_hash:
            return {**saved, "path": str(path)}
    record = {"kind": kind, "test_fraction": test_fraction, "seed": seed, "group_by": group_by,
              "near_duplicate_bits": NEAR_DUPLICATE_BITS, "grouping": GROUPING, "data_hash": data_hash,
              "manifest": str(manifest.path), **make_split(manifest, kind, test_fraction, seed, group_by)}
    log.info("split: %s", describe(record))
    atomic_write_json(path, record)
    return {**record, "path": str(path)}
