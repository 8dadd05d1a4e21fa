"""Near-duplicate images and groups that never straddle a split, on real photos: resized,
re-encoded and lightly cropped copies join their original; different photos stay apart."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from sgmft.data.groups import (
    LAYOUT_LEVELS,
    NEAR_DUPLICATE_BITS,
    _lsh_pairs,
    _table_pairs,
    components,
    image_groups,
    lsh_plan,
    near_duplicate_pairs,
    post_groups,
)
from sgmft.data.images import colour_layout, perceptual_hash
from sgmft.data.manifest import Post, load_manifest
from sgmft.data.splits import make_split
from tests.conftest import render_flat_posts

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


def layout_gap(a: Image.Image, b: Image.Image) -> float:
    x, y = (np.frombuffer(bytes.fromhex(colour_layout(im)), np.uint8).astype(int) for im in (a, b))
    return float(np.abs(x - y).mean())


@pytest.mark.parametrize("copy", list(COPIES))
def test_a_copy_keeps_its_colour_layout(copy):
    for name in PHOTOS:
        image = photo(name)
        # measured worst: 3.4 (JPEG quality 30 of the dark Hubble photo); renders: 99 % above 5.7
        assert layout_gap(image, COPIES[copy](image)) <= LAYOUT_LEVELS, name


def brute_force(values: list[int], max_bits: int) -> set[tuple[int, int]]:
    return {(i, j) for i in range(len(values)) for j in range(i + 1, len(values))
            if bin(values[i] ^ values[j]).count("1") <= max_bits}


def planted(n: int, copies: int, seed: int = 0) -> list[int]:
    """``n`` random 64-bit hashes and ``copies`` copies of some of them with 0 to 12 bits flipped."""
    rng = np.random.default_rng(seed)
    values = [int(v) for v in rng.integers(0, 2**63, n, dtype=np.int64)]
    for source in rng.integers(0, n, copies):
        flipped = values[source]
        for bit in rng.choice(64, rng.integers(0, 13), replace=False):
            flipped ^= 1 << int(bit)
        values.append(flipped)
    return values


def as_hex(values: list[int]) -> list[str]:
    return [f"{v:016x}" for v in values]


def test_exact_search_finds_every_pair_within_the_threshold():
    values = planted(300, 60)
    found = {tuple(p) for p in near_duplicate_pairs(as_hex(values), 12).tolist()}
    assert found == brute_force(values, 12) and len(found) >= 60


def test_locality_sensitive_search_finds_close_pairs_and_nothing_farther():
    values = planted(3000, 600, seed=1)
    expected = brute_force(values, 12)
    found = {tuple(p) for p in near_duplicate_pairs(as_hex(values), 12, exact_limit=0).tolist()}
    assert found <= expected                            # every candidate is verified
    assert len(found) >= 0.97 * len(expected)            # planned for 99.5 % at the threshold, 12 bits


def test_lsh_plan_grows_keys_with_the_data_and_tables_with_the_recall():
    assert lsh_plan(1_000) == (16, 248)                 # C(52,16)/C(64,16) = 0.0212: 248 tables for 99.5 %
    assert lsh_plan(1_000, bits=8) == (16, 60)          # C(56,16)/C(64,16) = 0.085
    k, tables = lsh_plan(10_000_000)
    assert k == 23 and tables == 2201                   # log2(10 M) - 1; C(52,23)/C(64,23) = 0.0024
    assert lsh_plan(1_000, recall=0.9)[1] < 248


def test_one_table_finds_the_pairs_that_differ_only_outside_its_bits():
    plan = [(np.arange(16), 0x9E3779B97F4A7C15)]          # the table samples bits 0-15
    outside13, outside16 = ((1 << 13) - 1) << 20, 0xFFFF << 48
    # 1 differs from 0 in bit 40 (same key, 1 bit: found); 2 in bit 3 (another key: not found by
    # this table); 3 and 4 share 0's key but are 13 and 16 bits away (candidates, not pairs)
    values = np.array([0, 1 << 40, 1 << 3, outside13, outside16], np.uint64)
    assert _table_pairs(values, plan, 12, window=32).tolist() == [0 * 5 + 1]
    # in a run of equal keys each hash meets the `window` hashes after it (in order of index)
    values = np.array([0, outside13, 1 << 40], np.uint64)
    assert _table_pairs(values, plan, 12, window=1).tolist() == []
    assert _table_pairs(values, plan, 12, window=2).tolist() == [0 * 3 + 2]


def test_the_locality_sensitive_pairs_do_not_depend_on_the_threads():
    values = np.array(planted(3000, 600, seed=2), np.uint64)
    one = _lsh_pairs(values, 12, threads=1)
    assert len(one) >= 600 and np.array_equal(one, _lsh_pairs(values, 12, threads=3))
    assert _lsh_pairs(values[:1], 12).shape == (0, 2) and _lsh_pairs(values[:0], 12).shape == (0, 2)
    assert _lsh_pairs(np.array([5, 5], np.uint64), 12).tolist() == [[0, 1]]


def test_every_verified_pair_is_in_one_group():
    # a path 0-1-2-3 (stars split it: [1, 1, 1, 3], so 2 and 3, a verified pair, straddled)
    assert components(4, np.array([[0, 1], [1, 2], [2, 3]])).tolist() == [0, 0, 0, 0]
    assert components(5, np.array([[3, 4], [1, 3]])).tolist() == [0, 1, 2, 1, 1]
    assert components(3, np.zeros((0, 2), np.int64)).tolist() == [0, 1, 2]


def post(i: int, phash: int, layout: bytes = bytes(32)) -> Post:
    return Post(f"p{i}", "t", f"i{i}.png", "home", None, None, i + 1, ("t",), f"sha{i}",
                image_phash=f"{phash:016x}", image_layout=layout.hex())


def test_a_chain_of_verified_pairs_is_one_group_and_the_layout_cuts_it():
    # each hash 8 bits from the next: 0 ~ 1 ~ 2 ~ 3 ~ 4, though 0 and 4 are 32 bits apart
    values = [0, 0xFF, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF]
    assert image_groups([post(i, v) for i, v in enumerate(values)]) == [0] * 5
    # image 2 in other colours: no pair of it is verified, and the chain falls in three
    far = bytes([200] * 32)
    posts = [post(i, v, far if i == 2 else bytes(32)) for i, v in enumerate(values)]
    assert image_groups(posts) == [0, 0, 2, 3, 3]


def test_equal_hashes_with_other_colours_are_not_near_duplicates():
    far = bytes([200] * 32)
    groups = image_groups([post(0, 7), post(1, 7, far), post(2, 7)])
    assert groups == [0, 1, 0]


def test_rendered_flat_images_are_not_one_group_and_split(tmp_path):
    manifest = load_manifest(render_flat_posts(tmp_path))
    groups = post_groups(manifest.posts)
    assert len(set(groups)) >= 40                       # of 48 (was 3: the hash alone, chained)
    split = make_split(manifest, "stratified", 0.2, 0)
    test_labels = {p.label for p in manifest.posts if p.id in set(split["test"])}
    assert len(test_labels) == 8


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
