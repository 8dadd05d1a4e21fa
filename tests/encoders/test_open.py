"""Opening a cache costs the same at any size: the ids stay on disk (ids.arrow, found by binary
search), chunk layouts are read when a chunk is first used, a chunk file is mapped once for all
its tensors, within one budget of descriptors; caches written before ids.arrow still open."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.numpy import save_file

from sgmft.data.idtable import write_table
from sgmft.data.manifest import load_manifest
from sgmft.encoders import chunks
from sgmft.encoders.cache import IDS, CacheCorruptError, chunk_name, load_cache
from tests.encoders.test_cache import run as _extract


def test_opening_reads_no_id_and_one_chunk_layout(small_manifest, tmp_path, fake_encoder_factory):
    manifest = load_manifest(small_manifest)
    _extract(manifest, tmp_path / "c", fake_encoder_factory)
    header = json.loads((tmp_path / "c" / "cache.json").read_text())
    assert "ids" not in header and header["posts"] == 8 and header["ids_file"] == IDS
    cache = load_cache(tmp_path / "c")
    assert "ids" not in vars(cache) and len(cache) == 8            # no list of every id was read
    assert sorted(cache.text.files._layouts) == [0]                 # one chunk's header, not three
    assert cache.rows(["p7", "p1"]).tolist() == [7, 1] and "ids" not in vars(cache)
    assert cache.holding([manifest.posts[5]]) == [5]
    np.testing.assert_array_equal(cache.text[[7, 1]], np.asarray(cache.text)[[7, 1]])
    assert cache.ids == manifest.ids                                # read when asked for


def test_a_chunk_file_is_mapped_once_for_all_its_tensors_within_the_budget(
        small_manifest, tmp_path, fake_encoder_factory, monkeypatch):
    cache = _extract(load_manifest(small_manifest), tmp_path / "c", fake_encoder_factory)
    chunks._MAPPED.clear()
    cache.text[np.arange(8)], cache.image[np.arange(8)]
    assert len(chunks._MAPPED) == 3                                 # 3 files, text and image views of each
    monkeypatch.setattr(chunks, "OPEN_CHUNKS", 2)
    chunks._MAPPED.clear()
    np.asarray(cache.image)
    assert len(chunks._MAPPED) == 2                                 # the least recently used was unmapped


def test_a_chunk_replaced_after_opening_is_an_error_not_stale_bytes(small_manifest, tmp_path,
                                                                   fake_encoder_factory):
    cache = _extract(load_manifest(small_manifest), tmp_path / "c", fake_encoder_factory)
    cache.text[0]
    chunks._MAPPED.clear()
    path = tmp_path / "c" / chunk_name(0)
    copy = path.read_bytes()
    path.unlink()
    path.write_bytes(copy)                                          # another file at the same path
    with pytest.raises(ValueError, match="replaced after its cache was opened"):
        cache.text[0]


def test_a_corrupt_id_table_is_found_on_open(small_manifest, tmp_path, fake_encoder_factory):
    _extract(load_manifest(small_manifest), tmp_path / "c", fake_encoder_factory)
    write_table(tmp_path / "c" / IDS, ["p0"], {"digest": np.zeros(1, np.uint64)}, ("id", "digest"))
    with pytest.raises(CacheCorruptError, match=r"ids\.arrow is corrupt"):
        load_cache(tmp_path / "c")
    (tmp_path / "c" / IDS).unlink()
    with pytest.raises(CacheCorruptError, match="missing or unreadable"):
        load_cache(tmp_path / "c")


def test_a_cache_written_before_ids_arrow_opens_and_is_upgraded_by_extract(
        small_manifest, tmp_path, fake_encoder_factory):
    manifest = load_manifest(small_manifest)
    folder = tmp_path / "c"
    reference = _extract(manifest, folder, fake_encoder_factory)
    expected = np.asarray(reference.text)
    header = json.loads((folder / "cache.json").read_text())
    for key in ("ids_file", "posts", "ids_sha256"):
        header.pop(key)
    header["ids"] = manifest.ids                                    # the old header
    (folder / "cache.json").write_text(json.dumps(header))
    (folder / IDS).unlink()
    old = load_cache(folder)
    assert old.table is None and old.rows(["p2"]).tolist() == [2]
    assert old.holding(list(manifest.posts[:1])) == [None]          # no digests: posts found by id only
    np.testing.assert_array_equal(np.asarray(old.text), expected)
    upgraded = _extract(manifest, folder, fake_encoder_factory)
    assert upgraded.table is not None and "ids" not in json.loads((folder / "cache.json").read_text())
    assert upgraded.holding(list(manifest.posts[:2])) == [0, 1]


def _sequence_cache(folder, posts: int, rows: int) -> None:
    """A pooled-and-sequence cache of ``posts`` posts in chunks of ``rows``, written as extract
    writes one (tiny features: what is measured is the descriptors)."""
    folder.mkdir()
    header = {"format": 1, "encoder_identity": {"name": "x", "options": {}, "sequences": True},
              "content_hash": "h", "chunk_size": rows, "chunks": {}, "chunk_bytes": {}, "complete": True}
    for index, start in enumerate(range(0, posts, rows)):
        n = min(rows, posts - start)
        value = np.arange(start, start + n, dtype=np.float32)[:, None]
        tokens = np.repeat(value % 1000, 2, 1)[:, None].astype(np.float16).repeat(2, 1)
        tensors = {"text": np.repeat(value, 2, 1), "image": np.repeat(value, 3, 1),
                   "text_tokens": tokens, "image_tokens": tokens.copy()}
        save_file(tensors, str(folder / chunk_name(index)))
        chunks.record_chunk(header, index, folder / chunk_name(index))
    ids = [f"p{i}" for i in range(posts)]
    write_table(folder / IDS, ids, {"digest": np.arange(posts, dtype=np.uint64)}, ("id", "digest"))
    header |= {"ids_file": IDS, "posts": posts, "ids_sha256": ""}
    (folder / "cache.json").write_text(json.dumps(header))


def test_a_300k_sequence_cache_is_read_for_a_training_epoch_under_ulimit_n_256(tmp_path):
    # 300 chunk files of four tensors each: mapped per tensor, with 256 maps per tensor, they
    # held up to 1,024 descriptors; now one map per file, at most a quarter of the limit
    _sequence_cache(tmp_path / "c", 300_000, 1000)
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        import numpy as np
        from sgmft.encoders import chunks
        from sgmft.encoders.cache import load_cache
        from sgmft.training.data import Rows, batches, chunks_of
        from sgmft.training.trainer import epoch_order
        cache = load_cache({str(tmp_path / "c")!r})
        rows = np.arange(len(cache))
        keys = ("text", "image", "text_tokens", "image_tokens")
        data = {{key: Rows(getattr(cache, key), rows) for key in keys}}
        order = epoch_order(len(rows), 0, 0, chunks_of(data))
        seen = 0
        for batch in batches(data, 4096, order):
            assert np.array_equal(batch["text"][:, 0].numpy(), order[seen:seen + len(batch["text"])].numpy())
            seen += len(batch["text"])
        print(seen, len(chunks._MAPPED), chunks.open_budget())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    seen, mapped, budget = map(int, done.stdout.split())
    assert seen == 300_000 and budget == 64 and mapped <= budget


def test_threads_share_the_mappings_safely(small_manifest, tmp_path, fake_encoder_factory, monkeypatch):
    # the server gathers features from several threads at once, through one LRU of mappings
    from concurrent.futures import ThreadPoolExecutor

    cache = _extract(load_manifest(small_manifest), tmp_path / "c", fake_encoder_factory)
    expected = np.asarray(cache.text)
    monkeypatch.setattr(chunks, "OPEN_CHUNKS", 1)             # every gather evicts another file
    rows = np.random.default_rng(0).integers(0, 8, (400, 5))
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda r: cache.text[r], rows))
    assert all(np.array_equal(f, expected[r]) for f, r in zip(found, rows, strict=True))
