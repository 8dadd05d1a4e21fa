"""Features made elsewhere (a GPU cluster, any encoder) imported into the normal feature cache.

`import_features` reads a Parquet file with columns ``id``, ``text`` and ``image`` (lists of
floats of one width per column) and writes the cache of a manifest's posts, in manifest order,
in the format `sgmft.encoders.cache` reads: train, evaluate, predict and serve use it as an
extracted cache. Its encoder identity names the file and its SHA-256.

Nothing is held whole: the file is read a row group at a time, in record batches, and
scattered, in manifest order, into temporary memory-mapped arrays beside the cache, which are
then cut into chunks. A Parquet reader decodes a row group whole, at about four times its size
(measured: 0.5 GB for a row group of 20,000 rows of 512 + 1,280 floats), so the largest row
group bounds the import's memory: write the file with row groups of at most about 20,000 rows.
Every problem is a `FeatureImportError` naming the rows (ids missing from the file or extra in it, a
repeated id, unequal widths, empty, NaN or infinite values), and then no cache is written.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from safetensors.numpy import save_file

from sgmft.data.manifest import Manifest
from sgmft.data.posts import first_seen
from sgmft.encoders.cache import (
    CHUNK_MIB,
    FORMAT_VERSION,
    HEADER,
    IMPORTED,
    FeatureCache,
    check_dtype,
    chunk_name,
    load_cache,
    rows_per_chunk,
    stored_as,
    write_ids,
)
from sgmft.io import atomic_write, atomic_write_json, check_writable, folder_lock, sha256_file
from sgmft.provenance import now, versions

#: Parquet rows read at once
READ_ROWS = 16_384
COLUMNS = ("text", "image")


class FeatureImportError(ValueError):
    """A features file that cannot become the cache of a manifest; names the rows."""


def _named(ids: list[str], shown: int = 10) -> str:
    return ", ".join(map(repr, ids[:shown])) + (f" ... ({len(ids)} in all)" if len(ids) > shown else "")


def imported_identity(path: Path, digest: str) -> dict[str, Any]:
    """The encoder identity of a cache imported from ``path`` (its name and SHA-256)."""
    return {"name": IMPORTED, "options": {"file": path.name, "sha256": digest}, "sequences": False}


def _positions(file: pq.ParquetFile, manifest: Manifest, path: Path) -> np.ndarray:
    """Per Parquet row, its row in the manifest; errors for missing, extra and repeated ids
    (found with Arrow's hash tables: no Python object an id)."""
    ids = pa.chunked_array([batch.column(0).cast(pa.string()) for batch in _batches(file, ["id"])],
                           pa.string())
    posts = manifest.posts.table.column("id")
    code, first = first_seen(ids)
    again = np.flatnonzero(first[code] != np.arange(len(code)))
    if len(again):
        repeated = ids.take(again).to_pylist()
        raise FeatureImportError(f"{path}: id(s) appear more than once: {_named(repeated)}")
    where = pc.index_in(ids, value_set=posts)
    extra = ids.filter(pc.is_null(where)).to_pylist()
    missing = posts.filter(pc.invert(pc.is_in(posts, value_set=ids))).to_pylist()
    if missing or extra:
        parts = ([f"{len(missing)} post(s) of {manifest.path} have no features: {_named(missing)}"]
                 if missing else []) + ([f"{len(extra)} id(s) are not posts of {manifest.path}: "
                                         f"{_named(extra)}"] if extra else [])
        raise FeatureImportError(f"{path}: " + "; ".join(parts))
    return where.to_numpy(zero_copy_only=False).astype(np.int64)


def _width(file: pq.ParquetFile, column: str, path: Path) -> int:
    """A column's width: its fixed size, or the length of its first value."""
    if column not in file.schema_arrow.names:
        raise FeatureImportError(f"{path}: no column {column!r} (expected id, text, image)")
    kind = file.schema_arrow.field(column).type
    if pa.types.is_fixed_size_list(kind):
        return kind.list_size
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise FeatureImportError(f"{path}: column {column!r} holds {kind}, not lists of floats")
    first = next(file.iter_batches(batch_size=1, row_groups=[0], columns=[column])).column(0)
    return int(pc.list_value_length(first)[0].as_py() or 0)


def _values(batch: pa.RecordBatch, column: str, width: int, ids: list[str], path: Path) -> np.ndarray:
    """(rows, width) float32 of one column of a record batch, checked."""
    values = batch.column(column)
    lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
    wrong = [ids[k] for k in np.nonzero(np.nan_to_num(lengths, nan=-1) != width)[0]]
    if wrong:
        raise FeatureImportError(f"{path}: the {column} features of id(s) {_named(wrong)} are missing or "
                                 f"not {width} wide (the file's first row is)")
    flat = pc.list_flatten(values).to_numpy(zero_copy_only=False)
    array = np.asarray(flat, dtype=np.float32).reshape(len(ids), width)
    bad = [ids[k] for k in np.nonzero(~np.isfinite(array).all(1))[0]]
    if bad:
        raise FeatureImportError(f"{path}: the {column} features of id(s) {_named(bad)} hold NaN or "
                                 "infinite values")
    return array


def _batches(file: pq.ParquetFile, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The file's rows, ``READ_ROWS`` at a time, one row group after another: a reader over the
    whole file holds the row groups it has read (measured: 2 GB for ten row groups of 143 MB,
    against 0.44 GB a row group at a time); what the decoded row group held goes back to the
    system after it (Arrow's allocator would keep it)."""
    for group in range(file.num_row_groups):
        yield from file.iter_batches(batch_size=READ_ROWS, row_groups=[group], columns=columns,
                                     use_threads=False)
        pa.default_memory_pool().release_unused()


def import_features(manifest: Manifest, path: str | Path, out: str | Path, overwrite: bool = False,
                    chunk_rows: int | None = None, dtype: str | None = None,
                    chunk_mib: float = CHUNK_MIB) -> FeatureCache:
    """The feature cache of ``manifest`` in ``out`` from the Parquet file ``path`` (see the
    module docstring), its features stored in ``dtype`` (float32, float16; None: float32, or as
    an existing cache stores them), ``chunk_rows`` posts a chunk file (None: as many as fill
    ``chunk_mib`` MiB; a chunk is copied twice while it is written, so its size bounds the import's
    memory); a complete cache of the same file and manifest is reused."""
    path, folder = Path(path), Path(out)
    if not path.is_file():
        raise FileNotFoundError(f"features file not found: {path}")
    digest = sha256_file(path)
    identity = imported_identity(path, digest)
    check_writable(folder)
    with folder_lock(folder, "sgmft extract --from"):
        header = _existing(folder)
        if header is not None and not overwrite:
            if header["encoder_identity"] == identity and header["content_hash"] == manifest.content_hash():
                check_dtype(header, dtype, folder)
                return load_cache(folder)
            raise FeatureImportError(
                f"{folder} holds another feature cache ({header['encoder_identity']['name']}, "
                f"{header.get('manifest')}): use another --out, or replace it with --overwrite")
        file = pq.ParquetFile(path, memory_map=True)    # the compressed pages read in place
        widths = {column: _width(file, column, path) for column in COLUMNS}
        if min(widths.values()) < 1:
            raise FeatureImportError(f"{path}: empty feature vectors ({widths})")
        where = _positions(file, manifest, path)
        temporary = {column: folder / f".import-{column}.f32" for column in COLUMNS}
        try:
            arrays = {column: np.lib.format.open_memmap(temporary[column], mode="w+", dtype=np.float32,
                                                        shape=(len(manifest.posts), widths[column]))
                      for column in COLUMNS}
            start = 0
            for batch in _batches(file, ["id", *COLUMNS]):
                ids = batch.column("id").cast(pa.string()).to_pylist()
                rows = where[start:start + len(ids)]
                for column in COLUMNS:
                    arrays[column][rows] = _values(batch, column, widths[column], ids, path)
                start += len(ids)
            dtype = dtype or "float32"
            rows = chunk_rows or rows_per_chunk(widths, dtype, mib=chunk_mib)
            _write(folder, manifest, arrays, identity, path, digest, widths, rows, dtype)
        finally:
            arrays = {}
            for temp in temporary.values():
                temp.unlink(missing_ok=True)
    return load_cache(folder)


def _existing(folder: Path) -> dict[str, Any] | None:
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        header = json.loads((folder / HEADER).read_text(encoding="utf-8"))
        return header if header.get("complete") else None
    return None


def _write(folder: Path, manifest: Manifest, arrays: dict[str, np.ndarray], identity: dict[str, Any],
           path: Path, digest: str, widths: dict[str, int], chunk_rows: int, dtype: str) -> None:
    """Chunks of ``chunk_rows`` rows, then the header (complete) last: a killed import leaves no
    cache that claims to be one."""
    (folder / HEADER).unlink(missing_ok=True)
    for stale in folder.glob("chunk-*.safetensors"):
        stale.unlink()
    chunks, sizes = {}, {}
    for index, start in enumerate(range(0, len(manifest.posts), chunk_rows)):
        tensors = stored_as({column: np.ascontiguousarray(arrays[column][start:start + chunk_rows])
                             for column in COLUMNS}, dtype)
        target = folder / chunk_name(index)
        atomic_write(target, lambda tmp, tensors=tensors: save_file(tensors, str(tmp)))
        chunks[str(index)] = sha256_file(target)
        sizes[str(index)] = target.stat().st_size
    ids = write_ids(folder, manifest)
    atomic_write_json(folder / HEADER, {
        "format": FORMAT_VERSION, "encoder_identity": identity,
        "encoder": {"name": IMPORTED, "file": str(path.resolve()), "sha256": digest},
        "manifest": str(manifest.path), "content_hash": manifest.content_hash(), "text_preprocessing": None,
        "dtype": dtype, "chunk_size": chunk_rows, "batch_size": None,
        "chunks": chunks, "chunk_bytes": sizes, "complete": True, "created": now(), "finished": now(),
        "versions": versions(),
        "dims": widths, "shared_space": False, "precision": "fp32", **ids})
