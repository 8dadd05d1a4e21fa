"""The feature cache's chunk files read in place: each feature is a `ChunkedArray`, rows
gathered from memory-mapped chunks, never loaded whole.

A chunk is a safetensors file: 8 bytes (little-endian header length), a JSON header naming
each tensor's dtype, shape and byte range, then the bytes. `layout` reads the header alone, and
`numpy.memmap` maps a tensor's bytes; the pages the kernel brings in belong to the page cache,
not to the process's anonymous memory, so a cache of ten million posts costs what one batch
costs. A chunk file is mapped once for all its tensors (`ChunkFiles.view`), and at most
`open_budget` files are mapped at once in the process, whatever the caches (a mapping holds a
file descriptor: the budget stays within a quarter of RLIMIT_NOFILE).
"""

from __future__ import annotations

import json
import resource
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sgmft.io import sha256_file

#: safetensors dtype names -> NumPy
DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64, "I64": np.int64,
          "I32": np.int32, "U8": np.uint8}
#: chunk files mapped at once at most (least recently used unmapped first; `open_budget`)
OPEN_CHUNKS = 256


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}.safetensors"


def record_chunk(header: dict[str, Any], index: int, path: Path) -> None:
    """Record a chunk just written in the header: its SHA-256 (read once, now) and its size."""
    header["chunks"][str(index)] = sha256_file(path)
    header.setdefault("chunk_bytes", {})[str(index)] = path.stat().st_size


def chunk_is_valid(folder: Path, index: int, header: dict[str, Any], verify: bool = False) -> bool:
    """Whether chunk ``index`` is there as it was written: its size as recorded (a stat), or with
    ``verify`` (or for a cache that recorded no sizes) its SHA-256 (a full read)."""
    path = folder / chunk_name(index)
    expected = header.get("chunks", {}).get(str(index))
    size = header.get("chunk_bytes", {}).get(str(index))
    try:
        actual = path.stat().st_size
    except OSError:
        return False
    if expected is None or (size is not None and actual != size):
        return False
    if size is not None and not verify:
        return True
    return sha256_file(path) == expected


def layout(path: Path) -> dict[str, tuple[np.dtype, tuple[int, ...], int]]:
    """name -> (dtype, shape, byte offset in the file) of every tensor of a safetensors file."""
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    found = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name!r} of dtype {entry['dtype']} cannot be memory-mapped")
        found[name] = (np.dtype(dtype), tuple(entry["shape"]), 8 + size + entry["data_offsets"][0])
    return found


def open_budget(limit: int | None = None) -> int:
    """How many chunk files may be mapped at once: ``limit`` (default `OPEN_CHUNKS`), within a
    quarter of the process's soft limit on open files (each mapping holds a descriptor; the rest
    are the program's)."""
    limit = OPEN_CHUNKS if limit is None else limit
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return limit if soft == resource.RLIM_INFINITY else max(1, min(limit, soft // 4))


#: every chunk file mapped in this process, least recently used first (one budget for all
#: caches), by path and the file's identity (a chunk rewritten in place is another file)
_MAPPED: OrderedDict[tuple[Path, tuple[int, int]], np.memmap] = OrderedDict()
_LOCK = threading.Lock()


def file_identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def mapped(path: Path, identity: tuple[int, int]) -> np.memmap:
    """The bytes of a chunk file (as it was when ``identity`` was taken), mapped read-only once
    for all its tensors; the least recently used file is unmapped when more than `open_budget`
    are. A file replaced since is an error, not the new file's bytes read by the old layout."""
    key = (path, identity)
    with _LOCK:   # the server reads caches from several threads
        found = _MAPPED.get(key)
        if found is not None:
            _MAPPED.move_to_end(key)
            return found
        found = np.memmap(path, dtype=np.uint8, mode="r")
        if file_identity(path) != identity:
            raise ValueError(f"{path} was replaced after its cache was opened: open the cache again")
        _MAPPED[key] = found
        while len(_MAPPED) > open_budget():
            _MAPPED.popitem(last=False)
        return found


class ChunkFiles:
    """The chunk files of one cache, ``chunk_rows`` rows each (the last may hold fewer; ``rows``
    in all). A file's layout is read when it is first used, so opening costs one header."""

    def __init__(self, paths: Sequence[Path], chunk_rows: int, rows: int):
        self.paths, self.chunk_rows, self.rows = list(paths), chunk_rows, rows
        self._layouts: dict[int, dict[str, tuple[np.dtype, tuple[int, ...], int]]] = {}
        self._identities: dict[int, tuple[int, int]] = {}

    def layout(self, index: int) -> dict[str, tuple[np.dtype, tuple[int, ...], int]]:
        """Chunk ``index``'s tensors (checked to hold the rows it should)."""
        found = self._layouts.get(index)
        if found is None:
            self._identities[index] = file_identity(self.paths[index])
            found = layout(self.paths[index])
            expected = min(self.chunk_rows, self.rows - index * self.chunk_rows)
            wrong = {key: shape[0] for key, (_, shape, _) in found.items() if shape[0] != expected}
            if wrong:
                raise ValueError(f"{self.paths[index]} holds {wrong} rows, expected {expected}")
            self._layouts[index] = found
        return found

    def view(self, index: int, key: str) -> np.ndarray:
        """Tensor ``key`` of chunk ``index``: a view of the file's one mapping."""
        dtype, shape, offset = self.layout(index)[key]
        size = int(np.prod(shape)) * dtype.itemsize
        raw = mapped(self.paths[index], self._identities[index])
        return raw[offset:offset + size].view(dtype).reshape(shape)


class ChunkedArray:
    """One feature (``key``) of every post, (N, ...) over a cache's chunk files (`ChunkFiles`).
    ``array[rows]`` gathers rows (an int array, a list, a slice or an int) into a new in-memory
    array, in the order asked, of ``as_dtype`` (default: as stored; float16 features are read
    as float32 where a cache stores them in half precision)."""

    def __init__(self, files: ChunkFiles, key: str, as_dtype: np.dtype | type | None = None):
        self.files, self.key, self.chunk_rows = files, key, files.chunk_rows
        dtype, shape, _ = files.layout(0)[key]
        self.dtype = np.dtype(as_dtype) if as_dtype is not None else dtype
        self.shape = (files.rows, *shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def paths(self) -> list[Path]:
        """The chunk files (their folder is the cache's)."""
        return self.files.paths

    def chunk(self, index: int) -> np.ndarray:
        """Chunk ``index``'s rows (a read-only view of its mapped file)."""
        return self.files.view(index, self.key)

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, tuple):   # rows first, then the other axes of what they gather
            head, *rest = rows
            gathered = self[head]
            many = isinstance(head, slice) or np.ndim(head) > 0
            return gathered[(slice(None), *rest)] if many else gathered[tuple(rest)]
        if isinstance(rows, slice):
            rows = np.arange(len(self))[rows]
        scalar = np.ndim(rows) == 0
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        rows = np.where(rows < 0, rows + len(self), rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        chunk_of = rows // self.chunk_rows
        for index in np.unique(chunk_of):
            where = np.nonzero(chunk_of == index)[0]
            out[where] = self.chunk(int(index))[rows[where] - index * self.chunk_rows]
        return out[0] if scalar else out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every row in memory (what small tests and tools may want; the pipeline never asks)."""
        whole = self[np.arange(len(self))]
        return whole if dtype is None else whole.astype(dtype)
