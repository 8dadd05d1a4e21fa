"""Id tables: written atomically with their indexes, opened without reading rows, posts found by
binary search (ids by hash, checked against the stored id, colliding hashes told apart)."""

import numpy as np
import pytest

from sgmft.data import idtable
from sgmft.data.idtable import IdTable, IdTableCorruptError, id_hashes, index_path, write_table


def test_ids_and_digests_are_found_by_binary_search(tmp_path):
    path = tmp_path / "ids.arrow"
    ids = [f"post-{i}" for i in range(1000)]
    digests = np.arange(1000, dtype=np.uint64)[::-1] * 7
    write_table(path, ids, {"digest": digests}, index=("id", "digest"))
    table = IdTable(path, ("id", "digest"))
    assert len(table) == 1000 and table.ids() == ids
    assert table.positions(["post-999", "nope", "post-0", "post-500"]).tolist() == [999, -1, 0, 500]
    assert table.find("digest", np.array([digests[3], 1, digests[998]], np.uint64)).tolist() == [3, -1, 998]
    assert np.array_equal(table.column("digest"), digests)
    assert table.take("id", np.array([5, 2])) == ["post-5", "post-2"]
    entries = np.load(index_path(path, "id"))
    assert np.all(np.diff(entries["key"].astype(np.float64)) >= 0)  # sorted by hash
    assert np.array_equal(np.sort(entries["row"]), np.arange(1000))


def test_ids_of_one_hash_are_told_apart(tmp_path, monkeypatch):
    # every id hashes alike: the lookup checks the stored id and scans the run of equal hashes
    monkeypatch.setattr(idtable, "id_hashes", lambda ids: np.zeros(len(list(ids)), np.uint64))
    path = tmp_path / "ids.arrow"
    write_table(path, ["a", "b", "c"])
    assert IdTable(path).positions(["c", "a", "b", "d"]).tolist() == [2, 0, 1, -1]


def test_hashes_are_stable_and_64_bit():
    # the same id gives the same hash in any process: BLAKE2b, not Python's salted hash()
    assert id_hashes(["p0"])[0] == np.uint64(int.from_bytes(
        __import__("hashlib").blake2b(b"p0", digest_size=8).digest(), "little"))
    assert id_hashes(["p0", "p1"]).dtype == np.uint64 and len(set(id_hashes(["p0", "p1"]))) == 2


def test_an_empty_table_finds_nothing(tmp_path):
    write_table(tmp_path / "ids.arrow", [])
    assert IdTable(tmp_path / "ids.arrow").positions(["x"]).tolist() == [-1]


def test_a_missing_or_mismatched_index_is_an_error(tmp_path):
    path = tmp_path / "ids.arrow"
    write_table(path, ["a", "b"])
    other = tmp_path / "other.arrow"
    write_table(other, ["a", "b", "c"])
    index_path(other, "id").replace(index_path(path, "id"))
    with pytest.raises(IdTableCorruptError, match="does not index"):
        IdTable(path)
    index_path(path, "id").unlink()
    with pytest.raises(IdTableCorruptError, match="missing or unreadable"):
        IdTable(path)
