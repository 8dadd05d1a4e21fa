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
    name = f"split-stratified-0.2-seed0-nd12-components-layout-{demo_manifest.data_hash()[:12]}.json"
    saved = json.loads((tmp_path / name).read_text())
    assert saved["test"] == first["test"] and saved["data_hash"] == demo_manifest.data_hash()
    assert load_or_make_split(demo_manifest, "stratified", 0.2, 0, folder=tmp_path) == first


def test_manifest_split_column_required_everywhere(demo_manifest):
    with pytest.raises(ValueError, match="split column is empty in 80 row"):
        make_split(demo_manifest, "manifest")


def test_auto_uses_the_manifest_split_column_when_there_is_one(tmp_path, demo_manifest, caplog):
    from dataclasses import replace

    posts = [replace(p, split="test" if i % 4 == 0 else "val" if i % 4 == 1 else "train")
             for i, p in enumerate(demo_manifest.posts)]
    manifest = replace(demo_manifest, posts=posts)
    with caplog.at_level("INFO"):
        split = load_or_make_split(manifest, "auto", folder=tmp_path)
    assert split["kind"] == "manifest" and "the manifest's split column" in caplog.text
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (40, 20, 20)
    assert load_or_make_split(demo_manifest, "auto", folder=tmp_path)["kind"] == "stratified"


def test_tiny_data_is_split_as_well_as_it_can_be(tmp_path, caplog):
    from dataclasses import replace

    small = load_manifest(make_demo(tmp_path, posts_per_class=2))
    with caplog.at_level("WARNING"):
        split = make_split(small, "stratified", 0.2, 0)          # 16 posts, 8 classes
    assert len(split["test"]) == 8 and "so that each of the 8 labels has one" in caplog.text
    one_home = replace(small, posts=[p for p in small.posts if p.id != small.posts[0].id])
    with caplog.at_level("WARNING"):
        split = make_split(one_home, "stratified", 0.2, 0)
    lone = next(p for p in one_home.posts if p.label == small.posts[0].label)
    assert lone.id in split["train"] and "single post, kept in training" in caplog.text
    singles = replace(small, posts=list({p.label: p for p in small.posts}.values()))
    with pytest.raises(ValueError, match="give the manifest a 'split' column"):
        make_split(singles, "stratified", 0.2, 0)


def test_the_default_split_never_puts_a_near_duplicate_image_on_both_sides(tmp_path):
    """Each of 12 photos posted three times, as the original, a resized and a re-encoded
    copy (different bytes): the stratified split keeps each photo's posts on one side."""
    import io

    from PIL import Image

    from sgmft import PLACES
    from tests.conftest import write_jsonl

    skimage = pytest.importorskip("skimage.data")
    rows = []
    names = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "hubble_deep_field",
             "immunohistochemistry", "retina", "page", "moon", "clock")
    for n, name in enumerate(names):
        original = Image.fromarray(getattr(skimage, name)()).convert("RGB")
        copies = [original, original.resize((original.width // 2, original.height // 2)), original]
        for c, image in enumerate(copies):
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90 - 30 * c)
            (tmp_path / f"{name}-{c}.jpg").write_bytes(buffer.getvalue())
            rows.append({"id": f"{name}-{c}", "text": f"照片 {name} 第{c}次", "image": f"{name}-{c}.jpg",
                         "label": PLACES[n % 4]})
    manifest = load_manifest(write_jsonl(tmp_path / "m.jsonl", rows))
    assert len({p.image_sha256 for p in manifest.posts}) == 36           # no two files alike
    for seed in range(5):
        split = make_split(manifest, "stratified", 0.25, seed)
        test = set(split["test"])
        assert test and set(split["train"])
        for name in names:
            sides = {f"{name}-{c}" in test for c in range(3)}
            assert len(sides) == 1, (seed, name)
