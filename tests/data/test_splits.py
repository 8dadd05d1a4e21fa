import json
from collections import Counter

import pytest

from sgmft.data.demo import make_demo
from sgmft.data.manifest import load_manifest
from sgmft.data.splits import load_or_make_split, make_split


@pytest.fixture(scope="module")
def demo_manifest(tmp_path_factory):
    return load_manifest(make_demo(tmp_path_factory.mktemp("demo"), posts_per_class=10))


def test_stratified_split_is_80_20_per_class_and_seeded(demo_manifest):
    split = make_split(demo_manifest, "stratified", 0.2, seed=3)
    assert len(split["test"]) == 16 and len(split["train"]) == 64
    labels = {p.id: p.label for p in demo_manifest.posts}
    assert set(Counter(labels[i] for i in split["test"]).values()) == {2}
    assert split == make_split(demo_manifest, "stratified", 0.2, seed=3)
    assert split != make_split(demo_manifest, "stratified", 0.2, seed=4)
    assert not set(split["train"]) & set(split["test"])


def test_user_split_keeps_users_apart(demo_manifest):
    split = make_split(demo_manifest, "user", 0.2, seed=0)
    users = {p.id: p.user for p in demo_manifest.posts}
    train_users = {users[i] for i in split["train"]}
    test_users = {users[i] for i in split["test"]}
    assert train_users and test_users and not train_users & test_users
    assert 0.05 < len(split["test"]) / len(demo_manifest) < 0.45


def test_split_saved_beside_data_and_reused(demo_manifest, tmp_path):
    first = load_or_make_split(demo_manifest, "stratified", 0.2, 0, folder=tmp_path)
    saved = json.loads((tmp_path / "split-stratified-0.2-seed0.json").read_text())
    assert saved["test"] == first["test"] and saved["data_hash"] == demo_manifest.data_hash()
    assert load_or_make_split(demo_manifest, "stratified", 0.2, 0, folder=tmp_path) == first


def test_manifest_split_column_required_everywhere(demo_manifest):
    with pytest.raises(ValueError, match="needs a split on every row"):
        make_split(demo_manifest, "manifest")


def test_work_dir_beside_data_or_in_user_cache(demo_manifest, monkeypatch, tmp_path):
    from sgmft.data import splits

    monkeypatch.delenv("SGMFT_CACHE", raising=False)
    assert splits.work_dir(demo_manifest) == demo_manifest.path.parent / ".sgmft"
    monkeypatch.setattr(splits.os, "access", lambda *_: False)   # a read-only data folder
    monkeypatch.setattr(splits.Path, "home", lambda: tmp_path)
    expected = tmp_path / ".cache" / "sgmft" / demo_manifest.content_hash()[:16]
    assert splits.work_dir(demo_manifest) == expected
    monkeypatch.setenv("SGMFT_CACHE", str(tmp_path / "elsewhere"))
    assert splits.work_dir(demo_manifest).parent == tmp_path / "elsewhere"


def test_too_small_for_a_stratified_split(tmp_path):
    small = load_manifest(make_demo(tmp_path, posts_per_class=2))
    with pytest.raises(ValueError, match="cannot hold all 8 classes"):
        make_split(small, "stratified", 0.2, 0)
