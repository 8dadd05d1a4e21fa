"""Half-precision caches: `extract --dtype float16` (encoded or imported) stores the pooled
features in float16, half the bytes, read back as float32; a cache is not silently reused in
another precision than asked."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sgmft.cli import app
from sgmft.data.manifest import load_manifest
from sgmft.encoders.cache import CacheMismatchError, chunk_name, load_cache
from sgmft.encoders.chunks import layout
from tests.encoders.test_cache import run as _extract
from tests.encoders.test_imported import features, posts, write_parquet  # noqa: F401 (fixture)

runner = CliRunner()


def test_float16_halves_the_chunks_and_reads_back_as_float32(small_manifest, tmp_path, fake_encoder_factory):
    manifest = load_manifest(small_manifest)
    full = _extract(manifest, tmp_path / "f32", fake_encoder_factory)
    half = _extract(manifest, tmp_path / "f16", fake_encoder_factory, dtype="float16")
    assert half.header["dtype"] == "float16" and full.header["dtype"] == "float32"
    assert layout(tmp_path / "f16" / chunk_name(0))["text"][0] == np.float16
    assert half.text.dtype == np.float32 and half.text[[0, 5]].dtype == np.float32
    np.testing.assert_array_equal(np.asarray(half.text), np.asarray(full.text).astype(np.float16))
    np.testing.assert_array_equal(np.asarray(half.image), np.asarray(full.image).astype(np.float16))
    def data_bytes(name: str) -> int:
        return sum(int(np.prod(shape)) * dtype.itemsize for i in range(3)
                   for dtype, shape, _ in layout(tmp_path / name / chunk_name(i)).values())

    assert data_bytes("f16") * 2 == data_bytes("f32")
    again = _extract(manifest, tmp_path / "f16", fake_encoder_factory)      # no dtype: as stored
    assert again.header["dtype"] == "float16" and len(fake_encoder_factory.built) == 2
    with pytest.raises(CacheMismatchError, match="stores its features in float16, not float32"):
        _extract(manifest, tmp_path / "f16", fake_encoder_factory, dtype="float32")


def test_imported_features_can_be_stored_in_float16_from_the_cli(posts, tmp_path):  # noqa: F811
    ids, text, image = features()
    source = write_parquet(tmp_path / "f.parquet", ids, text, image)
    result = runner.invoke(app, ["extract", str(posts), "--from", str(source), "--out", str(tmp_path / "c"),
                                 "--dtype", "float16"])
    assert result.exit_code == 0, result.output
    assert "stored in float16" in result.output
    cache = load_cache(tmp_path / "c")
    assert json.loads((tmp_path / "c" / "cache.json").read_text())["dtype"] == "float16"
    np.testing.assert_array_equal(cache.text[np.arange(30)], text.astype(np.float16).astype(np.float32))
    bad = runner.invoke(app, ["extract", str(posts), "--from", str(source), "--dtype", "float8"])
    assert bad.exit_code == 2 and "float32 or float16" in bad.output
    for option, value, said in (("--chunk-size", "0", "at least one post"), ("--chunk-mib", "0", "above 0")):
        bad = runner.invoke(app, ["extract", str(posts), "--from", str(source), option, value])
        assert bad.exit_code == 2 and said in bad.output
    rows = runner.invoke(app, ["extract", str(posts), "--from", str(source), "--out", str(tmp_path / "r"),
                               "--chunk-size", "7"])
    assert rows.exit_code == 0 and json.loads((tmp_path / "r" / "cache.json").read_text())["chunk_size"] == 7
