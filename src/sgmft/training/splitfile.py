"""A run's split on disk, opened in constant time.

    split.json    what the split is: its kind, each part's size, the folds' count, the file below
    split.arrow   one row per post of the manifest (`sgmft.data.idtable`, indexed by id): its id,
                  part (train, calibration, test; none: a post of no part), validation fold (-1:
                  not validated) and digest (`Manifest.post_digests`: what tells a changed row)

`RunSplit` reads it: ``split["train"]`` and the other parts as lists of ids when a caller asks
for a whole part (evaluate asks for the test posts), and `RunSplit.parts` for the posts of a
prediction batch, found by binary search without reading the rest. A run written before
split.arrow (its ids as JSON lists in split.json) reads the same way.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sgmft.data.idtable import IdTable, index_path, write_table
from sgmft.io import atomic_write_json

META = "split.json"
FILE = "split.arrow"
#: every file of a run's split
FILES = (META, FILE, index_path(Path(FILE), "id").name)
#: the part codes of split.arrow
PARTS = ("none", "train", "calibration", "test")
#: the keys of the parts, as lists of ids (``posts``: id -> digest)
LISTS = ("train", "val", "folds", "calibration", "test", "posts")


def write_split(out: Path, kind: str, train: Sequence[str], folds: Sequence[int], calibration: Sequence[str],
                test: Sequence[str], digests: dict[str, str]) -> None:
    """Write ``split.arrow`` (train ids with their folds, then the calibration and test ids,
    then the manifest's other posts) and then ``split.json``, each atomically."""
    ids = [*train, *calibration, *test]
    parts = [1] * len(train) + [2] * len(calibration) + [3] * len(test)
    placed = set(ids)
    rest = [i for i in digests if i not in placed]
    ids += rest
    parts += [0] * len(rest)
    fold = np.full(len(ids), -1, np.int16)
    fold[: len(train)] = np.asarray(folds, np.int16)
    write_table(out / FILE, ids, {"part": np.asarray(parts, np.int8), "fold": fold,
                                  "digest": np.asarray([digests.get(i, "") for i in ids], dtype=object)})
    validated = int((fold >= 0).sum())
    atomic_write_json(out / META, {"kind": kind, "file": FILE, "posts": len(ids), "train": len(train),
                                   "val": validated, "calibration": len(calibration), "test": len(test),
                                   "refitted": int(fold.max(initial=-1)) >= 1})


def read_split(folder: Path) -> RunSplit | None:
    """The split of the run in ``folder``; None for a run without one."""
    path = Path(folder) / META
    if not path.is_file():
        return None
    meta = json.loads(path.read_text(encoding="utf-8"))
    return RunSplit(meta, IdTable(Path(folder) / meta["file"]) if "file" in meta else None)


class RunSplit(Mapping):
    """The split a run recorded (see the module docstring): ``split[part]`` for part in `LISTS`
    (lists of ids; ``folds`` the fold of each train id; ``posts`` id -> digest), ``split["kind"]``."""

    def __init__(self, meta: dict[str, Any], table: IdTable | None):
        self.meta, self.table = meta, table
        self._read: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if self.table is None or key not in LISTS:
            return self.meta[key]
        if key not in self._read:
            self._read[key] = self._list(key)
        return self._read[key]

    def __iter__(self) -> Iterator[str]:
        return iter([*self.meta, *LISTS] if self.table is not None else self.meta)

    def __len__(self) -> int:
        return len(list(iter(self)))

    @property
    def refitted(self) -> bool:
        """Whether the final model was refitted on every validated post (K >= 2 folds)."""
        if self.table is not None:
            return bool(self.meta["refitted"])
        return max(self.meta.get("folds") or [-1]) >= 1

    def _list(self, key: str) -> Any:
        """One part read from split.arrow (only the rows it needs), where a caller asks for it."""
        part = self.table.column("part")
        if key == "posts":
            digests = self.table.table.column("digest").to_pylist()
            return {i: d for i, d in zip(self.table.ids(), digests, strict=True) if d}
        if key in ("calibration", "test"):
            return self.table.take("id", np.flatnonzero(part == PARTS.index(key)))
        train = np.flatnonzero(part == 1)
        fold = self.table.column("fold")[train]
        if key == "folds":
            return fold.tolist()
        return self.table.take("id", train if key == "train" else train[fold >= 0])

    def parts(self, ids: Sequence[str]) -> list[str | None]:
        """The part each post was in for the final model: ``train`` (trained on; with K >= 2
        folds the refit trains on every validated post too), ``val`` (held out for validation
        only), ``calibration`` (held out for the prediction sets), ``test``, or None."""
        if self.table is None:
            return [self._legacy.get(i) for i in ids]
        rows = self.table.positions(ids)
        found = np.flatnonzero(rows >= 0)
        validation_only = not self.refitted
        named: list[str | None] = [None] * len(ids)
        for j, code, fold in zip(found.tolist(), self.table.take("part", rows[found]),
                                 self.table.take("fold", rows[found]), strict=True):
            name = PARTS[code]
            if name != "none":
                named[j] = "val" if name == "train" and fold >= 0 and validation_only else name
        return named

    @functools.cached_property
    def _legacy(self) -> dict[str, str]:
        """A split.json of lists: id -> part, built once."""
        split = self.meta
        parts = {i: "test" for i in split.get("test", [])}
        parts |= {i: "calibration" for i in split.get("calibration", [])}
        if not self.refitted:
            parts |= {i: "val" for i in split.get("val", [])}
        return parts | {i: "train" for i in split.get("train", []) if i not in parts}

    def trained(self) -> list[str]:
        """The ids the final model trained on."""
        val = set() if self.refitted else set(self["val"])
        return [i for i in self["train"] if i not in val]
