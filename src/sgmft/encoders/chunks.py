"""The feature cache's chunk files read in place: each feature is a `ChunkedArray`, rows
gathered from memory-mapped chunks, never loaded whole.

A chunk is a safetensors file: 8 bytes (little-endian header length), a JSON header naming
each tensor's dtype, shape and byte range, then the bytes. `layout` reads the header alone, and
`numpy.memmap` maps a tensor's bytes; the pages the kernel brings in belong to the page cache,
not to the process's anonymous memory, so a cache of ten million posts costs what one batch
costs. At most `OPEN_CHUNKS` chunks are mapped at once (a mapping holds a file descriptor).
"""

from __future__ import annotations

import json
import struct
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sgmft.io import sha256_file

#: safetensors dtype names -> NumPy
DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64, "I64": np.int64,
          "I32": np.int32, "U8": np.uint8}
#: chunks mapped at once (least recently used closed first)
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


class ChunkedArray:
    """One feature (``key``) of every post, (N, ...) over chunk files of ``chunk_rows`` rows
    each (the last may hold fewer). ``array[rows]`` gathers rows (an int array, a list, a slice
    or an int) into a new in-memory array, in the order asked."""

    def __init__(self, paths: Sequence[Path], key: str, chunk_rows: int):
        self.paths, self.key, self.chunk_rows = list(paths), key, chunk_rows
        self._open: OrderedDict[int, np.memmap] = OrderedDict()
        self._layouts = [layout(path)[key] for path in self.paths]
        counts = [shape[0] for _, shape, _ in self._layouts]
        if any(n != chunk_rows for n in counts[:-1]) or not 0 < counts[-1] <= chunk_rows:
            raise ValueError(f"chunks of {key!r} hold {counts} rows, expected {chunk_rows} each")
        self.dtype = self._layouts[0][0]
        self.shape = (sum(counts), *self._layouts[0][1][1:])

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def chunk(self, index: int) -> np.memmap:
        """Chunk ``index`` mapped (read-only)."""
        mapped = self._open.get(index)
        if mapped is None:
            dtype, shape, offset = self._layouts[index]
            mapped = np.memmap(self.paths[index], dtype=dtype, mode="r", offset=offset, shape=shape)
            self._open[index] = mapped
            if len(self._open) > OPEN_CHUNKS:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(index)
        return mapped

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
