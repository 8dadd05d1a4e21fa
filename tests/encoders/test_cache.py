import json

import numpy as np
import pytest

from sgmft.data.manifest import load_manifest
from sgmft.encoders.cache import (
    CacheCorruptError,
    CacheMismatchError,
    chunk_name,
    extract_features,
    load_cache,
    rows_per_chunk,
)
from sgmft.io import sha256_file
from tests.conftest import write_image


def run(manifest, out, factory, **kwargs):
    return extract_features(manifest, out, "fake", encoder_factory=factory, progress=False,
                            batch_size=2, chunk_size=3, **kwargs)


def test_extract_writes_chunks_metadata_and_features(small_manifest, tmp_path, fake_encoder_factory):
    manifest = load_manifest(small_manifest)
    cache = run(manifest, tmp_path / "c", fake_encoder_factory)
    assert cache.ids == manifest.ids and cache.text.shape == (8, 6) and cache.image.shape == (8, 3)
    header = json.loads((tmp_path / "c" / "cache.json").read_text())
    assert header["complete"] and header["content_hash"] == manifest.content_hash()
    assert header["encoder"] == {"name": "fake", "dim": 6} and header["dtype"] == "float32"
    assert sorted(header["chunks"]) == ["0", "1", "2"] and header["versions"]["torch"]
    encoder = fake_encoder_factory.built[0]
    assert encoder.images_seen == 7  # p7 repeats p0's image bytes: encoded once
    np.testing.assert_array_equal(cache.image[7], cache.image[0])
    expected = encoder.encode_texts([p.clean_text for p in manifest.posts])
    np.testing.assert_array_equal(cache.text, expected)


def test_reuse_when_nothing_changed(small_manifest, tmp_path, fake_encoder_factory):
    manifest = load_manifest(small_manifest)
    first = run(manifest, tmp_path / "c", fake_encoder_factory)
    second = run(manifest, tmp_path / "c", fake_encoder_factory)
    assert len(fake_encoder_factory.built) == 1  # the encoder was not even loaded again
    np.testing.assert_array_equal(first.text, second.text)


def test_resume_after_interruption(small_manifest, tmp_path, fake_encoder_factory):
    manifest = load_manifest(small_manifest)
    reference = run(manifest, tmp_path / "ref", fake_encoder_factory)

    class Killed(Exception):
        pass

    def dying_factory(**kwargs):
        encoder = fake_encoder_factory(**kwargs)
        original = encoder.encode_images

        def encode_images(images):
            if encoder.images_seen >= 3:
                raise Killed
            return original(images)

        encoder.encode_images = encode_images
        return encoder

    with pytest.raises(Killed):
        run(manifest, tmp_path / "c", dying_factory)
    header = json.loads((tmp_path / "c" / "cache.json").read_text())
    assert not header["complete"] and list(header["chunks"]) == ["0"]
    assert not list((tmp_path / "c").glob("*.tmp"))
    with pytest.raises(CacheCorruptError, match="incomplete"):
        load_cache(tmp_path / "c")
    resumed = run(manifest, tmp_path / "c", fake_encoder_factory)
    assert fake_encoder_factory.built[-1].texts_seen == [p.clean_text for p in manifest.posts[3:]]
    np.testing.assert_array_equal(resumed.text, reference.text)
    np.testing.assert_array_equal(resumed.image, reference.image)


def test_a_truncated_chunk_is_found_on_open_and_a_flipped_byte_by_verify(small_manifest, tmp_path,
                                                                         fake_encoder_factory, monkeypatch):
    from sgmft.encoders import chunks as chunks_module
    from sgmft.encoders import store as store_module

    manifest = load_manifest(small_manifest)
    reference = run(manifest, tmp_path / "c", fake_encoder_factory)
    chunk = tmp_path / "c" / chunk_name(1)
    data = bytearray(chunk.read_bytes())
    chunk.write_bytes(bytes(data[:-4]))                          # truncated: its size says so
    with pytest.raises(CacheCorruptError, match="missing or corrupt"):
        load_cache(tmp_path / "c")
    rebuilt = run(manifest, tmp_path / "c", fake_encoder_factory)
    assert fake_encoder_factory.built[-1].texts_seen == [p.clean_text for p in manifest.posts[3:6]]
    np.testing.assert_array_equal(rebuilt.image, reference.image)
    hashed = []
    for module in (store_module, chunks_module):
        monkeypatch.setattr(module, "sha256_file", lambda path: hashed.append(path) or sha256_file(path))
    load_cache(tmp_path / "c")
    assert hashed == []                                           # opening reads no chunk whole
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))                               # the same size, one byte flipped
    with pytest.raises(CacheCorruptError, match="extract --verify"):
        load_cache(tmp_path / "c", verify=True)
    verified = run(manifest, tmp_path / "c", fake_encoder_factory, verify=True)
    assert len(fake_encoder_factory.built) == 3 and len(hashed) >= 3
    np.testing.assert_array_equal(verified.image, reference.image)


def test_corrupt_header_rebuilds_everything(small_manifest, tmp_path, fake_encoder_factory):
    manifest = load_manifest(small_manifest)
    run(manifest, tmp_path / "c", fake_encoder_factory)
    (tmp_path / "c" / "cache.json").write_text("{ truncated")
    cache = run(manifest, tmp_path / "c", fake_encoder_factory)
    assert len(fake_encoder_factory.built) == 2 and len(cache) == 8


def test_refuses_cache_of_another_encoder_or_manifest(small_manifest, tmp_path,
                                                      fake_encoder_factory):
    manifest = load_manifest(small_manifest)
    run(manifest, tmp_path / "c", fake_encoder_factory)
    with pytest.raises(CacheMismatchError, match="encoder"):
        extract_features(manifest, tmp_path / "c", "other", encoder_factory=fake_encoder_factory,
                         progress=False)
    write_image(small_manifest.parent / "images" / "gym.png", (1, 1, 1))
    changed = load_manifest(small_manifest)
    with pytest.raises(CacheMismatchError, match="another manifest"):
        run(changed, tmp_path / "c", fake_encoder_factory)
    cache = run(changed, tmp_path / "c", fake_encoder_factory, overwrite=True)
    assert cache.header["content_hash"] == changed.content_hash()


def test_rows_lookup(small_manifest, tmp_path, fake_encoder_factory):
    cache = run(load_manifest(small_manifest), tmp_path / "c", fake_encoder_factory)
    assert cache.rows(["p3", "p0"]).tolist() == [3, 0]
    with pytest.raises(KeyError, match="'zz' is not in the feature cache"):
        cache.rows(["zz"])


def test_posts_are_found_by_digest_without_an_index_of_every_id(small_manifest, tmp_path,
                                                                fake_encoder_factory):
    from dataclasses import replace

    manifest = load_manifest(small_manifest)
    cache = run(manifest, tmp_path / "c", fake_encoder_factory)
    posts = list(manifest.posts)
    edited = replace(posts[2], tokens=("别的", "内容"))             # same id, another text
    stranger = replace(posts[5], id="zz")
    assert cache.holding([posts[6], edited, posts[1], stranger]) == [6, None, 1, None]
    assert cache.holds(posts[4]) == 4 and "index" not in vars(cache)   # no id -> row dict was built


def test_token_sequences_are_stored_in_float16(small_manifest, tmp_path, fake_encoder_factory):
    manifest = load_manifest(small_manifest)
    cache = run(manifest, tmp_path / "c", fake_encoder_factory, sequences=True)
    assert cache.text_tokens.shape == (8, 2, 6) and cache.image_tokens.shape == (8, 3, 3)
    assert cache.text_tokens.dtype == np.float16
    np.testing.assert_allclose(cache.image_tokens[:, 1].astype(np.float32), np.asarray(cache.image) + 1,
                               atol=0.5)
    assert cache.header["token_shapes"] == {"text": [2, 6], "image": [3, 3]}
    # a sequence cache also serves a request for pooled features, without encoding again
    again = run(manifest, tmp_path / "c", fake_encoder_factory)
    assert len(fake_encoder_factory.built) == 1 and again.image_tokens is not None


def test_pooled_cache_refuses_a_sequence_request(small_manifest, tmp_path, fake_encoder_factory):
    manifest = load_manifest(small_manifest)
    cache = run(manifest, tmp_path / "c", fake_encoder_factory)
    assert cache.text_tokens is None
    with pytest.raises(CacheMismatchError, match="--sequences --overwrite"):
        run(manifest, tmp_path / "c", fake_encoder_factory, sequences=True)


def test_same_data_gives_the_same_chunk_bytes(small_manifest, tmp_path, fake_encoder_factory):
    manifest = load_manifest(small_manifest)
    run(manifest, tmp_path / "a", fake_encoder_factory)
    run(manifest, tmp_path / "b", fake_encoder_factory)
    for name in (chunk_name(i) for i in range(3)):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    hashes = [json.loads((tmp_path / f / "cache.json").read_text())["chunks"] for f in "ab"]
    assert hashes[0] == hashes[1]


def test_unwritable_output_fails_before_the_encoder_loads(small_manifest, tmp_path, fake_encoder_factory,
                                                          monkeypatch):
    from sgmft.encoders import cache as cache_module
    from sgmft.io import StorageError

    def refuse(folder):
        raise StorageError(13, f"cannot write in {folder}: it is read-only or not yours")

    monkeypatch.setattr(cache_module, "check_writable", refuse)
    with pytest.raises(StorageError, match="read-only"):
        run(load_manifest(small_manifest), tmp_path / "c", fake_encoder_factory)
    assert fake_encoder_factory.built == []


def test_stale_temp_files_of_a_killed_extraction_are_cleaned(small_manifest, tmp_path, fake_encoder_factory):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / ".chunk-00001.safetensors.x1.tmp").write_bytes(b"half")
    run(load_manifest(small_manifest), tmp_path / "c", fake_encoder_factory)
    assert not list((tmp_path / "c").glob("*.tmp"))


def test_memo_keeps_features_only_while_a_later_chunk_needs_them(small_manifest):
    from sgmft.encoders.plan import Memo, make_plan

    manifest = load_manifest(small_manifest)
    plan = make_plan(manifest.posts, chunk_size=3, batch_size=2)
    # chunk 0: p0 and p1 clean to the same text ("home" and "work" are stop words): 2 texts in 1
    # batch, 3 images in 2; chunk 2: p7's image bytes were seen in chunk 0, so 0 new images there
    assert [[len(j.keys) for j in plan.jobs[i]] for i in range(3)] == [[2, 2, 1], [2, 1, 2, 1], [2, 1]]
    memo = Memo(plan, [0, 1, 2])
    shared = ("image", manifest.posts[0].image_sha256)
    assert memo.last_need[shared] == 2                              # p7, in the last chunk, needs it
    memo.entries[shared] = {"pooled": None}
    memo.release(1)
    assert shared in memo.entries
    memo.release(2)
    assert not memo.entries and not memo.last_need


def test_features_of_either_arithmetic_serve_any_later_command(small_manifest, tmp_path,
                                                               fake_encoder_factory):
    """Once ``extract --precision bf16`` then ``train`` raised CacheMismatchError: the arithmetic
    is recorded, not part of what a cache must match."""
    from sgmft.data.manifest import load_manifest
    from sgmft.encoders.features import find_cache

    manifest = load_manifest(small_manifest)
    out = tmp_path / "features"
    extract_features(manifest, out, "fake", {}, encoder_factory=fake_encoder_factory, precision="bf16")
    assert fake_encoder_factory.built[-1].precision == "bf16"
    header = json.loads((out / "cache.json").read_text())
    assert header["precision"] == "bf16" and "precision" not in header["encoder_identity"]["options"]
    again = extract_features(manifest, out, "fake", {}, encoder_factory=fake_encoder_factory,
                             precision="fp32")
    assert len(fake_encoder_factory.built) == 1 and again.header["precision"] == "bf16"     # reused
    assert find_cache(manifest, "fake", folders=(out,)) is not None
    # a cache written before the arithmetic left the identity is still found
    header["encoder_identity"]["options"]["precision"] = "bf16"
    (out / "cache.json").write_text(json.dumps(header))
    assert find_cache(manifest, "fake", folders=(out,)) is not None


def test_auto_precision_asks_torch_for_native_bf16(monkeypatch):
    import torch

    from sgmft import device

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert device.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert device.resolve_precision("auto") == "fp32" and device.resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="expected one of"):
        device.resolve_precision("fp8")


def test_rows_per_chunk_fill_the_asked_bytes():
    assert rows_per_chunk({"text": 512, "image": 1280}, "float32") == 9362          # 64 MiB / 7,168 B
    assert rows_per_chunk({"text": 512, "image": 1280}, "float16") == 18724         # / 3,584 B
    # token states are float16: 6 x 4 + 3 x 3 floats per post, 2 B each, beside 9 pooled float32
    assert rows_per_chunk({"text": 6, "image": 3}, "float32", {"text": (2, 6), "image": (3, 3)},
                          mib=780 / 2**20) == 10                                   # 780 B / 78 B a post
    assert rows_per_chunk({"text": 6, "image": 3}, "float32", mib=1e-9) == 1        # never empty


@pytest.mark.parametrize(("dtype", "sequences", "rows"), [("float32", False, 3), ("float16", False, 6),
                                                          ("float32", True, 1)])
def test_a_new_cache_sizes_its_chunks_by_bytes(small_manifest, tmp_path, fake_encoder_factory, dtype,
                                               sequences, rows):
    manifest = load_manifest(small_manifest)
    # the fake encoder's post: 6 + 3 pooled floats (36 B in float32, 18 in float16), and with
    # sequences 2 x 6 + 3 x 3 float16 token states (42 B more): 108 B hold 3, 6 and 1 posts
    cache = extract_features(manifest, tmp_path / "c", "fake", encoder_factory=fake_encoder_factory,
                             progress=False, batch_size=2, dtype=dtype, sequences=sequences,
                             chunk_mib=108 / 2**20)
    header = json.loads((tmp_path / "c" / "cache.json").read_text())
    assert header["chunk_size"] == rows and len(header["chunks"]) == -(-8 // rows)
    assert len(fake_encoder_factory.built) == 1             # the encoder that sized the chunks encoded them
    by_rows = run(manifest, tmp_path / "d", fake_encoder_factory, dtype=dtype)
    np.testing.assert_array_equal(cache.text[np.arange(8)], by_rows.text[np.arange(8)])
    # an existing cache keeps its chunks whatever is asked now, and no encoder is built to size them
    again = extract_features(manifest, tmp_path / "c", "fake", encoder_factory=fake_encoder_factory,
                             progress=False, batch_size=2, dtype=dtype, sequences=sequences, chunk_mib=64)
    assert again.header["chunk_size"] == rows and len(fake_encoder_factory.built) == 2
