"""Post ids on disk, opened in constant time: what a feature cache (``ids.arrow``) and a run's
split (``split.arrow``) hold of every post.

- ``NAME.arrow``: an Arrow IPC file, memory-mapped when opened: the ``id`` column and any
  per-post columns beside it (a cache's digests; a split's part, fold and post digest).
- ``NAME.index-KEY.npy``: for each indexed key, its 64-bit values sorted with the row of each
  (a structured array: ``key`` uint64, ``row`` int64), memory-mapped. Ids are indexed by
  `id_hashes` (64 bits of their BLAKE2b), integer columns (a cache's digests) by their value.

Opening maps the files and reads nothing row by row; finding k posts costs k binary searches in
the mapped index (`IdTable.find`, `IdTable.positions`), and only the pages they touch are read.
No dict or list of every id is built unless a caller asks for the whole list (`IdTable.ids`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from sgmft.io import atomic_write

INDEX_DTYPE = np.dtype([("key", "<u8"), ("row", "<i8")])


class IdTableCorruptError(RuntimeError):
    """An id table's files are missing or disagree with each other."""


def id_hashes(ids: Iterable[str]) -> np.ndarray:
    """(n,) uint64: 64 bits of each id's BLAKE2b (stable across processes and machines)."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little") for i in ids),
        np.uint64,
    )


def index_path(path: Path, key: str) -> Path:
    return path.with_name(f"{path.stem}.index-{key}.npy")


def write_table(path: Path, ids: Sequence[str], columns: dict[str, np.ndarray] | None = None,
                index: Sequence[str] = ("id",)) -> None:
    """Write ``ids`` (N,) and ``columns`` (each (N,)) to ``path`` and an index for each key of
    ``index`` ("id", or an unsigned 64-bit column), every file atomically; the table last, so
    that a table found on disk has its indexes."""
    import pyarrow as pa

    columns = columns or {}
    table = pa.table({"id": pa.array(list(ids), pa.string()),
                      **{name: np.asarray(values) for name, values in columns.items()}})
    for key in index:
        values = id_hashes(ids) if key == "id" else np.asarray(columns[key], np.uint64)
        order = np.argsort(values, kind="stable")
        entries = np.empty(len(values), INDEX_DTYPE)
        entries["key"], entries["row"] = values[order], order

        def save(tmp: Path, entries: np.ndarray = entries) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, entries, allow_pickle=False)

        atomic_write(index_path(path, key), save)

    def write_arrow(tmp: Path) -> None:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=1 << 20)

    atomic_write(path, write_arrow)


class IdTable:
    """An id table (see the module docstring), memory-mapped."""

    def __init__(self, path: Path, index: Sequence[str] = ("id",)):
        import pyarrow as pa

        self.path = Path(path)
        try:
            self.table = pa.ipc.open_file(pa.memory_map(str(self.path), "r")).read_all()
            self.indexes = {key: np.load(index_path(self.path, key), mmap_mode="r") for key in index}
        except (OSError, ValueError, pa.ArrowInvalid) as exc:
            raise IdTableCorruptError(f"{self.path} (or its index) is missing or unreadable: {exc}") from None
        for key, entries in self.indexes.items():
            if entries.dtype != INDEX_DTYPE or len(entries) != self.table.num_rows:
                raise IdTableCorruptError(f"{index_path(self.path, key)} does not index {self.path}")

    def __len__(self) -> int:
        return self.table.num_rows

    def ids(self) -> list[str]:
        """Every id, in row order (a list of N strings: only where a caller needs them all)."""
        return self.table.column("id").to_pylist()

    def column(self, name: str) -> np.ndarray:
        """(N,) a column as a NumPy array (zero-copy for numbers without nulls)."""
        return self.table.column(name).to_numpy()

    def take(self, name: str, rows: np.ndarray) -> list:
        """The values of column ``name`` at ``rows``, as Python objects."""
        return self.table.column(name).take(np.asarray(rows, np.int64)).to_pylist()

    def find(self, key: str, values: np.ndarray) -> np.ndarray:
        """(k,) the first row whose ``key`` equals each value (-1 where none), by binary search."""
        entries = self.indexes[key]
        keys = entries["key"]
        values = np.asarray(values, np.uint64)
        if not len(keys):
            return np.full(len(values), -1, np.int64)
        at = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
        hit = keys[at] == values
        return np.where(hit, entries["row"][at], -1).astype(np.int64)

    def positions(self, ids: Sequence[str]) -> np.ndarray:
        """(k,) the row of each id, -1 where the table lacks it. Ids are found by their hash and
        checked against the stored id; two ids of one hash (about 1 in 10^12 pairs at 10 M ids)
        are told apart by scanning the run of equal hashes."""
        ids = list(ids)
        hashes = id_hashes(ids)
        rows = self.find("id", hashes)
        found = np.flatnonzero(rows >= 0)
        stored = self.take("id", rows[found])
        for j, name in zip(found, stored, strict=True):
            if name != ids[j]:
                rows[j] = self._scan(hashes[j], ids[j])
        return rows

    def _scan(self, value: np.uint64, name: str) -> int:
        """The row of ``name`` among the rows whose id hash is ``value``, or -1."""
        entries = self.indexes["id"]
        keys = entries["key"]
        first, last = np.searchsorted(keys, value, "left"), np.searchsorted(keys, value, "right")
        for row in entries["row"][first:last]:
            if self.take("id", [row])[0] == name:
                return int(row)
        return -1
