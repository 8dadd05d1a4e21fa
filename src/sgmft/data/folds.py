"""Validation inside the training split: K grouped folds, shaped like the test.

Every choice made on validation (the best epoch, the probes' regularisation, the fallback
mixture, the temperature) is made on out-of-fold predictions of K folds of the training posts
(`sgmft.training.crossfit`). The folds never split a group: posts sharing the grouping column's
value, the same image bytes or a near-duplicate image (`sgmft.data.groups`) fall in one fold, so
validation rewards what carries over to new events, users and images, not memory.

Which column groups (`validation_column`, ``train.val_by = "auto"``): when the manifest fixes
the split and one of its columns partitions it (no value on both sides, at least two values in
training, and a grouping rather than an id: at most one value per two posts), that column, the
coarsest if several do; else the ``--group-by`` column (``group`` by default) when posts have
it; else ``user``; else the images alone.

A group holding more than half of the training posts (one event that is most of the data)
stays in training in every fold: held out, it would leave a fold's model a fraction of the data
to learn from. Its posts get no out-of-fold prediction, and the choices are made on the others,
unless the others cannot validate (fewer than two of them, or one label only while training has
several, as the small events of me16-dev are all fake): then every post is grouped by its images
alone (a dominant image group still stays in training), and the folds resemble the training
posts more than a test on new groups will (``Folds.shift_like`` is False).
K shrinks to the number of groups there are (and says so); with fewer than two groups the
folds fall back to the images alone, then to no grouping; data too small for two folds gets
no validation at all.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sgmft.data.groups import post_groups
from sgmft.data.manifest import Manifest
from sgmft.data.posts import Post, subset, values_of

log = logging.getLogger(__name__)
#: a class with this many training posts or fewer stays in training in every fold
MIN_TRAIN_PER_CLASS = 2


@dataclass
class Folds:
    """K folds of the training posts: ``fold[i]`` is the fold of ``ids[i]`` (0..k-1), or -1 for
    a post kept in training in every fold. ``k`` 0 means no validation could be made."""

    ids: list[str]
    fold: list[int]
    k: int
    why: str                    # the grouping, in words ("by event, which partitions ...")
    column: str | None = None
    kept: dict[str, int] = field(default_factory=dict)   # groups kept in training -> posts
    notes: list[str] = field(default_factory=list)
    #: False when the column's groups could not be held out and near-duplicate images stood in:
    #: the folds then resemble the training posts more than a test on new groups will
    shift_like: bool = True
    #: each post's bootstrap unit for the decision layer's noise (`sgmft.decision.earned`): its
    #: value of the grouping column asked for (events, users; even where images stood in for it),
    #: else its near-duplicate image group; None: a unit of its own
    units: list = field(default_factory=list)
    #: whether ``units`` are a grouping column's values (then only units of two labels inform)
    units_by_column: bool = False

    @property
    def how(self) -> str:
        """The folds in words, with what was kept out of them and why K shrank."""
        head = f"{self.k} folds {self.why}" if self.k else self.why
        return "; ".join([head, *self.notes])

    def parts(self, index: int) -> tuple[list[str], list[str]]:
        """(training ids, validation ids) of fold ``index``."""
        return ([i for i, f in zip(self.ids, self.fold, strict=True) if f != index],
                [i for i, f in zip(self.ids, self.fold, strict=True) if f == index])

    @property
    def validated(self) -> list[str]:
        """The posts that get an out-of-fold prediction, in ``ids`` order."""
        return [i for i, f in zip(self.ids, self.fold, strict=True) if f >= 0]

    def validated_units(self) -> list:
        """Each validated post's bootstrap unit value (``units``; None: a unit of its own), in
        `validated` order."""
        if not self.units:
            return [None] * sum(f >= 0 for f in self.fold)
        return [u for u, f in zip(self.units, self.fold, strict=True) if f >= 0]

    def record(self) -> dict[str, Any]:
        """What run.json keeps of the folds."""
        sizes = Counter(f for f in self.fold if f >= 0)
        return {"k": self.k, "how": self.how, "column": self.column, "kept_in_training": self.kept,
                "fold_sizes": [sizes[i] for i in range(self.k)]}


def partitioning_column(manifest: Manifest, split: dict[str, Any]) -> str | None:
    """The coarsest column that partitions the split's train and test posts (see the module
    docstring), or None."""
    train, test = set(split.get("train", [])), set(split.get("test", []))
    if not train or not test:
        return None
    found = []
    sides = ["train" if i in train else "test" if i in test else None for i in manifest.ids]
    for column in manifest.columns:
        if column in ("label", "split"):
            continue
        values: dict[str, set[str]] = {"train": set(), "test": set()}
        complete = True
        for side, value in zip(sides, manifest.posts.column(column), strict=True):
            if side is None:
                continue
            if value is None:
                complete = False
                break
            values[side].add(value)
        if (complete and not values["train"] & values["test"] and len(values["train"]) >= 2
                and len(values["train"]) <= len(train) / 2):
            found.append((len(values["train"]), column))
    return min(found)[1] if found else None


def validation_column(manifest: Manifest, split: dict[str, Any], by: str = "auto",
                      group_by: str = "group") -> tuple[str | None, bool, str]:
    """(column to group by or None, whether images group too, why) for ``train.val_by``."""
    if by == "stratified":
        return None, False, "stratified, no grouping (train.val_by = stratified)"
    if by == "image":
        return None, True, "by near-duplicate images (train.val_by = image)"
    if by in ("user", "group"):
        column = "user" if by == "user" else group_by
        return column, True, f"by {column} (train.val_by = {by})"
    if split.get("kind") == "manifest":
        column = partitioning_column(manifest, split)
        if column is not None:
            return column, True, f"by {column}, which partitions the manifest's train/test split"
    if split.get("kind") in ("group", "user"):
        column = group_by if split["kind"] == "group" else "user"
        return column, True, f"by {column}, as the test split"
    present = manifest.columns
    for column in (group_by, "user"):
        if column in present:
            return column, True, f"by {column}"
    return None, True, "by near-duplicate images"


def make_folds(posts: Sequence[Post], k: int, seed: int, column: str | None = None,
               images: bool = True, why: str = "") -> Folds:
    """K folds of ``posts`` (the training split) grouped by ``column`` and images (see the
    module docstring); ``why`` says how the grouping was chosen, for the record."""
    from sklearn.model_selection import StratifiedGroupKFold  # here: scikit-learn takes seconds to import

    ids, labels = values_of(posts, "id"), [str(label) for label in values_of(posts, "label")]
    fold = [-1] * len(posts)
    counts = Counter(labels)
    rare = sorted(label for label, n in counts.items() if n <= MIN_TRAIN_PER_CLASS)
    if rare:
        log.warning("validation: class(es) %s have too few posts to spare any; they stay in training",
                    ", ".join(rare))
    eligible = [i for i, label in enumerate(labels) if label not in rare]
    groups, kept = _groups(posts, ids, eligible, column, images)
    units, units_by_column = _units(posts, column, groups)
    why = why or "by near-duplicate images"
    problem = _unusable(labels, eligible, [i for i in eligible if groups[i] is not None], groups, column)
    if problem is not None:    # the column's groups cannot validate: the images alone
        column = None
        groups, kept = _groups(posts, ids, eligible, None, images)
    pool = [i for i in eligible if groups[i] is not None]
    notes = [f"{problem}: grouped by near-duplicate images instead"] if problem is not None else []
    notes += [f"{value} ({n} posts) stays in training in every fold" for value, n in kept.items()]
    shift_like = problem is None
    distinct = len({groups[i] for i in pool})
    per_class = Counter(labels[i] for i in pool)
    largest = max(per_class.values(), default=0)
    if distinct < 2 or largest < 2 or len(pool) < 2 * len(per_class):
        return Folds(ids, fold, 0, "none (too few posts to hold any out)", column, kept)
    if len(per_class) < 2 <= len(counts):
        return Folds(ids, fold, 0, "none (the posts that could be held out all carry one label: choices "
                                   "made on them would only learn to answer it)", column, kept)
    folds = min(k, distinct, largest)
    if folds < k:
        notes.append(f"{folds} folds, not {k}: only {distinct} group(s) to spread, the largest "
                     f"class has {largest} post(s)")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():   # small classes: balanced as far as they allow
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        for number, (_, held) in enumerate(splitter.split(np.zeros(len(pool)), [labels[i] for i in pool],
                                                          [groups[i] for i in pool])):
            for j in held:
                fold[pool[j]] = number
    fold, filled = _without_empty_folds(fold, folds)
    if filled < folds:
        notes.append(f"{filled} fold(s), not {folds}: the groups' sizes left {folds - filled} empty")
    if filled < 2:
        return Folds(ids, [-1] * len(posts), 0, "none (the groups fill fewer than two folds)", column, kept)
    return Folds(ids, fold, filled, why, column, kept, notes, shift_like, units, units_by_column)


def _without_empty_folds(fold: list[int], k: int) -> tuple[list[int], int]:
    """The folds renumbered 0.. without the empty ones (a few large groups can leave one
    empty), and how many are left."""
    used = sorted(set(fold) - {-1})
    number = {old: new for new, old in enumerate(used)} | {-1: -1}
    return [number[f] for f in fold], len(used)


def _unusable(labels: list[str], eligible: list[int], pool: list[int], groups: list[object | None],
             column: str | None) -> str | None:
    """Why the groups of ``column`` cannot make validation folds, or None: fewer than two of
    them can be held out, or those that can hold a single label while training holds several
    (every choice made on them would only learn to answer that label)."""
    if column is None:
        return None
    if len({groups[i] for i in pool}) < 2:
        return f"fewer than two {column} groups can be held out"
    held = {labels[i] for i in pool}
    if len(held) < 2 <= len({labels[i] for i in eligible}):
        return (f"the {column} groups that can be held out hold only {', '.join(map(str, held))!s} posts, "
                "so validation could not tell the labels apart")
    return None


def _groups(posts: Sequence[Post], post_ids: list[str], pool: list[int], column: str | None,
            images: bool) -> tuple[list[object | None], dict[str, int]]:
    """Group ids for the posts of ``pool`` (None elsewhere, and for a dominant group's posts),
    and the dominant groups: value (or a name) -> posts."""
    chosen = subset(posts, pool)
    if images:
        ids: list[object] = list(post_groups(chosen, column))
    elif column is not None:
        ids = [f"{column}:{value}" if value else f"post:{post_ids[i]}"
               for i, value in zip(pool, values_of(chosen, column), strict=True)]
    else:
        ids = list(range(len(chosen)))
    groups: list[object | None] = [None] * len(posts)
    for i, group in zip(pool, ids, strict=True):
        groups[i] = group
    sizes = Counter(ids)
    kept = {}
    for group, n in sizes.items():
        if n > len(posts) / 2:
            first = next(i for i in pool if groups[i] == group)
            kept[_name(group, column, post_ids[first])] = n
            for i in pool:
                if groups[i] == group:
                    groups[i] = None
    return groups, kept


def _name(group: object, column: str | None, first: str) -> str:
    """A group in words: its column value, else "the images of post ID"."""
    prefix = f"{column}:"
    if column is not None and isinstance(group, str) and group.startswith(prefix):
        return group.removeprefix(prefix)
    return f"the images of post {first}"


def carve_validation(posts: Sequence[Post], fraction: float, seed: int, column: str | None = None,
                     images: bool = True, why: str = "") -> Folds:
    """One validation part of about ``fraction`` of ``posts``, grouped as the folds are: the
    first of round(1 / fraction) folds, as a single fold (the rest is -1: training)."""
    folds = make_folds(posts, max(2, round(1 / fraction)), seed, column, images, why)
    if folds.k == 0:
        return folds
    fold = [0 if f == 0 else -1 for f in folds.fold]
    return Folds(folds.ids, fold, 1, f"one part of {fraction:.0%} {folds.why}", folds.column, folds.kept,
                 [n for n in folds.notes if "folds, not" not in n], folds.shift_like, folds.units,
                 folds.units_by_column)


def carve_groups(posts: Sequence[Post], share: float, seed: int, column: str | None = None,
                 images: bool = True, why: str = "") -> Folds:
    """One part of whole groups (grouped as the folds are) whose size is nearest ``share`` of
    ``posts``: the groups in an order drawn from ``seed``, each taken when it brings the part
    closer to its target size. Unlike the first fold of a stratified splitter, which places the
    groups of most uneven labels first whatever the seed, the part differs from seed to seed and
    is never one large group bigger than twice the target. Returns a `Folds` of one fold (0: the
    part, -1: the rest), ``k`` 0 when nothing could be carved; ``shift_like`` False when the
    column's groups could not be used and images stood in for them."""
    ids, labels = values_of(posts, "id"), [str(label) for label in values_of(posts, "label")]
    counts = Counter(labels)
    eligible = [i for i, label in enumerate(labels) if counts[label] > MIN_TRAIN_PER_CLASS]
    groups, kept = _groups(posts, ids, eligible, column, images)
    units, units_by_column = _units(posts, column, groups)
    problem = _unusable(labels, eligible, [i for i in eligible if groups[i] is not None], groups, column)
    if problem is not None:
        groups, kept = _groups(posts, ids, eligible, None, images)
    sizes = Counter(g for g in groups if g is not None)
    order = np.random.default_rng(seed).permutation(len(sizes))
    names = list(sizes)
    target, total, chosen = share * len(posts), 0, set()
    for j in order:
        n = sizes[names[j]]
        if abs(total + n - target) < abs(total - target):
            chosen.add(names[j])
            total += n
    fold = [0 if g is not None and g in chosen else -1 for g in groups]
    notes = [f"{problem}: grouped by near-duplicate images instead"] if problem is not None else []
    how = (f"{len(chosen)} whole group(s) {why or 'by near-duplicate images'}, {total} posts "
           f"(target {share:.0%}: {target:.0f})")
    return Folds(ids, fold, 1 if total else 0, how, None if problem else column, kept, notes,
                 problem is None, units, units_by_column)


def _units(posts: Sequence[Post], column: str | None, groups: list[object | None]) -> tuple[list, bool]:
    """Each post's bootstrap unit (`Folds.units`): its value of ``column`` when one is asked for
    (even where images stand in for it), else its group; and whether they are the column's."""
    if column is not None:
        return list(values_of(posts, column)), True
    return list(groups), False
