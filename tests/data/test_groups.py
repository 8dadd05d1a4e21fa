"""Near-duplicate images and groups that never straddle a split, on real photos: resized,
re-encoded and lightly cropped copies join their original; different photos stay apart."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from sgmft.data.groups import NEAR_DUPLICATE_BITS, connected, near_duplicate_pairs, post_groups
from sgmft.data.images import perceptual_hash
from sgmft.data.manifest import load_manifest

data = pytest.importorskip("skimage.data")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "hubble_deep_field",
          "immunohistochemistry", "retina", "page", "moon", "clock")


def photo(name: str) -> Image.Image:
    array = getattr(data, name)()
    return Image.fromarray(array).convert("RGB")


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def crop(image: Image.Image, share: float) -> Image.Image:
    w, h = image.size
    dx, dy = int(w * share / 2), int(h * share / 2)
    return image.crop((dx, dy, w - dx, h - dy))


COPIES = {"resized to half": lambda im: im.resize((im.width // 2, im.height // 2)),
          "re-encoded at JPEG quality 30": lambda im: jpeg(im, 30),
          "resized to a third and re-encoded":
              lambda im: jpeg(im.resize((im.width // 3, im.height // 3)), 50),
          "brightened by 20 %": lambda im: im.point(lambda v: min(255, int(v * 1.2))),
          "cropped by 5 %": lambda im: crop(im, 0.05)}


def distance(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


@pytest.fixture(scope="module")
def hashes():
    return {name: perceptual_hash(photo(name)) for name in PHOTOS}


@pytest.mark.parametrize("copy", list(COPIES))
def test_a_copy_of_a_photo_is_its_near_duplicate(hashes, copy):
    for name in PHOTOS:
        assert distance(hashes[name], perceptual_hash(COPIES[copy](photo(name)))) <= NEAR_DUPLICATE_BITS, name


def test_different_photos_are_not_near_duplicates_and_a_heavy_crop_may_leave(hashes):
    pairs = [(a, b) for i, a in enumerate(PHOTOS) for b in PHOTOS[i + 1:]]
    assert min(distance(hashes[a], hashes[b]) for a, b in pairs) > NEAR_DUPLICATE_BITS
    # the threshold's effect: a 20 % crop of most photos is a new photo to the hash
    left = [name for name in PHOTOS if distance(hashes[name], perceptual_hash(crop(photo(name), 0.2)))
            > NEAR_DUPLICATE_BITS]
    assert len(left) >= len(PHOTOS) // 2


def test_pairs_match_brute_force_and_components_join_chains():
    rng = np.random.default_rng(0)
    values = [f"{int(v):016x}" for v in rng.integers(0, 2**63, 300, dtype=np.int64)]
    values += [f"{int(values[0], 16) ^ 0b111:016x}", f"{int(values[1], 16) ^ (1 << 40):016x}"]
    expected = {(i, j) for i in range(len(values)) for j in range(i + 1, len(values))
                if distance(values[i], values[j]) <= 12}
    assert set(near_duplicate_pairs(values, 12, block=64)) == expected
    assert connected([["a"], ["b"], ["a", "c"], ["c"], []]) == [0, 1, 0, 0, 4]


def write_posts(tmp_path, posts):
    rows = []
    for i, (image, user) in enumerate(posts):
        name = f"img{i}.jpg"
        image.save(tmp_path / name, "JPEG", quality=90)
        rows.append({"id": f"p{i}", "text": f"第{i}条 微博", "image": name, "label": "home", "user": user})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return load_manifest(tmp_path / "m.jsonl")


def test_groups_follow_images_and_the_column_without_chaining(tmp_path):
    coffee, rocket, moon = photo("coffee"), photo("rocket"), photo("moon")
    manifest = write_posts(tmp_path, [
        (coffee, "u1"), (COPIES["resized to half"](coffee), "u1"), (COPIES["cropped by 5 %"](coffee), "u2"),
        (rocket, "u2"), (moon, "u3"), (COPIES["re-encoded at JPEG quality 30"](moon), "u4")])
    by_image = post_groups(manifest.posts)
    assert by_image[0] == by_image[1] == by_image[2] and by_image[3] != by_image[0]
    assert by_image[4] == by_image[5] and len(set(by_image)) == 3
    by_user = post_groups(manifest.posts, "user")
    # the coffee photo is mostly u1's: its u2 copy goes with u1, not u2's rocket with it
    assert by_user[:3] == ["user:u1"] * 3 and by_user[3] == "user:u2"
    assert by_user[4] == by_user[5]                   # one image of u3 and u4: one group, no chain
    assert len(set(by_user)) == 3
