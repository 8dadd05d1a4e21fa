"""Features made elsewhere: a Parquet file becomes the normal feature cache (any row order),
feeds train and predict, and every bad file is an error naming its rows, with no cache left."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sgmft.cli import app
from sgmft.data.manifest import load_manifest
from sgmft.encoders.cache import HEADER, load_cache
from sgmft.encoders.chunks import ChunkedArray
from sgmft.encoders.imported import FeatureImportError, import_features
from tests.conftest import write_image, write_jsonl

runner = CliRunner()


@pytest.fixture
def posts(tmp_path):
    rows = []
    for i in range(30):
        write_image(tmp_path / f"img/{i}.png", ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256), (16, 16))
        label = ("home", "work", "gym")[i % 3]
        rows.append({"id": f"p{i}", "text": f"第{i}条 {label} 今天", "image": f"img/{i}.png", "label": label,
                     "user": f"u{i % 5}"})
    return write_jsonl(tmp_path / "posts.jsonl", rows)


def features(n=30, text=4, image=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    t = (rng.normal(size=(n, text)) + labels[:, None]).astype(np.float32)
    i = (rng.normal(size=(n, image)) - labels[:, None]).astype(np.float32)
    return [f"p{k}" for k in range(n)], t, i


def column(values: np.ndarray, fixed: bool) -> pa.Array:
    """Rows of float32 as a (fixed-size) list column, bit for bit."""
    flat = pa.array(np.ascontiguousarray(values).ravel())
    if fixed:
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32) * values.shape[1])
    return pa.ListArray.from_arrays(offsets, flat)


def write_parquet(path, ids, text, image, fixed=True, row_group_size=None):
    pq.write_table(pa.table({"id": ids, "text": column(text, fixed), "image": column(image, fixed)}), path,
                   row_group_size=row_group_size)
    return path


def test_an_import_in_any_order_is_the_cache_of_the_manifest(posts, tmp_path):
    ids, text, image = features()
    order = np.random.default_rng(1).permutation(30)
    source = write_parquet(tmp_path / "f.parquet", [ids[k] for k in order], text[order], image[order],
                           fixed=False)
    cache = import_features(load_manifest(posts), source, tmp_path / "cache", chunk_rows=8)
    assert cache.ids == ids and isinstance(cache.text, ChunkedArray)
    np.testing.assert_array_equal(np.asarray(cache.text), text)
    np.testing.assert_array_equal(cache.image[[29, 0, 8, 7]], image[[29, 0, 8, 7]])   # across chunks
    assert cache.header["encoder_identity"]["name"] == "imported" and cache.header["dims"] == {"text": 4,
                                                                                               "image": 6}
    again = import_features(load_manifest(posts), source, tmp_path / "cache", chunk_rows=8)
    assert again.header["created"] == cache.header["created"]          # the same file: reused


@pytest.mark.parametrize(("dtype", "rows"), [("float32", 10), ("float16", 20)])
def test_an_import_sizes_its_chunks_by_bytes(posts, tmp_path, dtype, rows):
    ids, text, image = features()
    source = write_parquet(tmp_path / "f.parquet", ids, text, image)
    # 4 + 6 floats a post: 40 B in float32, 20 in float16; chunks of 400 B
    cache = import_features(load_manifest(posts), source, tmp_path / "cache", dtype=dtype,
                            chunk_mib=400 / 2**20)
    assert cache.header["chunk_size"] == rows and len(cache.header["chunks"]) == -(-30 // rows)
    np.testing.assert_allclose(np.asarray(cache.text), text, rtol=1e-3)


def test_a_file_of_many_row_groups_is_read_a_group_at_a_time(posts, tmp_path, monkeypatch):
    monkeypatch.setattr("sgmft.encoders.imported.READ_ROWS", 4)       # batches smaller than a group
    ids, text, image = features()
    order = np.random.default_rng(2).permutation(30)
    source = write_parquet(tmp_path / "f.parquet", [ids[k] for k in order], text[order], image[order],
                           row_group_size=7)
    assert pq.ParquetFile(source).num_row_groups == 5
    cache = import_features(load_manifest(posts), source, tmp_path / "cache", chunk_rows=8)
    np.testing.assert_array_equal(np.asarray(cache.text), text)
    np.testing.assert_array_equal(np.asarray(cache.image), image)


@pytest.mark.parametrize("fault, message", [
    ("missing", r"1 post\(s\) of .* have no features: .p29."),
    ("extra", "are not posts of .*'q1'"),
    ("repeated", "appear more than once: 'p3'"),
    ("nan", "image features of id\\(s\\) 'p4' hold NaN"),
    ("width", "text features of id\\(s\\) 'p2' are missing or not 4 wide"),
])
def test_a_bad_file_names_its_rows_and_leaves_no_cache(posts, tmp_path, fault, message):
    ids, text, image = features()
    text_rows = list(map(list, text))
    if fault == "missing":
        ids, text_rows, image = ids[:-1], text_rows[:-1], image[:-1]
    elif fault == "extra":
        ids, text_rows, image = [*ids, "q1"], [*text_rows, text_rows[0]], np.vstack([image, image[:1]])
    elif fault == "repeated":
        ids = [*ids[:4], "p3", *ids[5:]]
    elif fault == "nan":
        image = image.copy()
        image[4, 2] = np.nan
    elif fault == "width":
        text_rows[2] = text_rows[2][:3]
    table = pa.table({"id": ids, "text": pa.array(text_rows, type=pa.list_(pa.float32())),
                      "image": pa.array(list(map(list, image)), type=pa.list_(pa.float32()))})
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(FeatureImportError, match=message):
        import_features(load_manifest(posts), tmp_path / "bad.parquet", tmp_path / "cache")
    assert not (tmp_path / "cache" / HEADER).exists() and not list((tmp_path / "cache").glob("chunk-*"))
    assert not list((tmp_path / "cache").glob(".import-*"))


def test_imported_features_feed_train_and_predict(posts, tmp_path):
    ids, text, image = features()
    source = write_parquet(tmp_path / "f.parquet", ids, text, image)
    cache = tmp_path / "cache"
    done = runner.invoke(app, ["extract", str(posts), "--from", str(source), "--out", str(cache)])
    assert done.exit_code == 0, done.output
    assert "features of 30 posts imported" in done.output and f"--cache {cache}" in done.output
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", "--data", str(posts), "--cache", str(cache), "--out", str(run),
                                  "--config", "fast", "--set", "train.epochs=2", "--set", "model.dim=16"])
    assert trained.exit_code == 0, trained.output
    assert json.loads((run / "run.json").read_text())["features"]["encoder"]["name"] == "imported"
    out = tmp_path / "p.parquet"
    predicted = runner.invoke(app, ["predict", str(run), "--manifest", str(posts), "--out", str(out)])
    assert predicted.exit_code == 0, predicted.output
    assert "features of 30 from a feature cache" in predicted.output
    assert pq.read_table(out).num_rows == 30
    one = runner.invoke(app, ["predict", str(run), "--text", "今天在家"])
    assert one.exit_code == 1 and "imported features" in one.output and "--from" in one.output
    served = runner.invoke(app, ["serve", str(run), "--port", "0"])
    assert served.exit_code == 1 and "no encoder" in served.output


def test_chunked_arrays_gather_rows_in_the_order_asked(posts, tmp_path):
    ids, text, image = features(30)
    cache = import_features(load_manifest(posts), write_parquet(tmp_path / "f.parquet", ids, text, image),
                            tmp_path / "cache", chunk_rows=7)
    array = load_cache(tmp_path / "cache").image
    assert array.shape == (30, 6) and len(array) == 30 and array.dtype == np.float32
    np.testing.assert_array_equal(array[[28, 1, 14, 6, 7]], image[[28, 1, 14, 6, 7]])
    np.testing.assert_array_equal(array[3:17], image[3:17])
    np.testing.assert_array_equal(array[-1], image[-1])
    np.testing.assert_array_equal(array[:, 2], image[:, 2])
    with pytest.raises(IndexError):
        array[[30]]
    assert cache.holds(load_manifest(posts).posts[4]) == 4
