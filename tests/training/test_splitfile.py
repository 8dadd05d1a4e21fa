"""A run's split on disk: split.arrow round-trips every part, a batch's posts are placed without
reading the others, and a split.json of lists (runs before split.arrow) reads the same way."""

import json

from sgmft.data.idtable import index_path
from sgmft.training.splitfile import FILE, META, read_split, write_split

TRAIN = ["t0", "t1", "t2", "t3"]
DIGESTS = {i: f"d{i}" for i in ["t0", "c0", "t1", "x0", "t2", "t3", "s0", "s1"]}


def _legacy(folder, folds):
    (folder / META).write_text(json.dumps({
        "kind": "stratified", "train": TRAIN, "val": [i for i, f in zip(TRAIN, folds, strict=True) if f >= 0],
        "folds": folds, "calibration": ["c0"], "test": ["s0", "s1"], "posts": DIGESTS}))
    return read_split(folder)


def test_every_part_round_trips_and_the_json_is_small(tmp_path):
    folds = [0, -1, 1, 0]
    write_split(tmp_path, "stratified", TRAIN, folds, ["c0"], ["s0", "s1"], DIGESTS)
    split = read_split(tmp_path)
    (tmp_path / "old").mkdir()
    legacy = _legacy(tmp_path / "old", folds)
    for key in ("train", "val", "folds", "calibration", "test", "posts", "kind"):
        assert split[key] == legacy[key], key
    meta = json.loads((tmp_path / META).read_text())
    assert meta["file"] == FILE and meta["train"] == 4 and meta["val"] == 3 and meta["refitted"]
    assert index_path(tmp_path / FILE, "id").is_file()
    assert "t0" not in (tmp_path / META).read_text()        # no id in the JSON


def test_a_batch_is_placed_as_the_final_model_saw_it(tmp_path):
    # K >= 2 folds: the refit trained on the validated posts too, so they are "train"
    write_split(tmp_path, "stratified", TRAIN, [0, -1, 1, 0], ["c0"], ["s0", "s1"], DIGESTS)
    ids = ["s1", "t1", "c0", "x0", "new", "t0"]
    expected = ["test", "train", "calibration", None, None, "train"]
    assert read_split(tmp_path).parts(ids) == expected
    old = tmp_path / "old"
    old.mkdir()
    assert _legacy(old, [0, -1, 1, 0]).parts(ids) == expected
    # one fold held out (K = 1): its posts were validation only
    write_split(tmp_path, "stratified", TRAIN, [0, -1, -1, 0], ["c0"], ["s0", "s1"], DIGESTS)
    split = read_split(tmp_path)
    assert split.parts(["t0", "t1", "t3"]) == ["val", "train", "val"]
    assert split.trained() == ["t1", "t2"] == _legacy(old, [0, -1, -1, 0]).trained()


def test_a_run_without_a_split_has_none(tmp_path):
    assert read_split(tmp_path) is None
