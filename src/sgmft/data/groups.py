"""Groups of posts that must stay on one side of any split: posts sharing a column's value (an
event, a user), the same image bytes, or near-duplicate images.

Near duplicates are images whose perceptual hashes (`sgmft.data.images.perceptual_hash`, 64 bits)
differ in at most `NEAR_DUPLICATE_BITS` bits. Measured on real photos (scikit-image's sample
photos, tests/data/test_groups.py): resizing, JPEG re-encoding and a brightness change move the
hash by at most 6 bits, a 5 % crop by at most 12, a 10 % crop by 6 to 18; two different photos
differ by 20 bits or more. On me16-dev the 17 pairs of distinct image files within 12 bits are
all of one event and one label (at 16 bits, pairs across events appear). Hence 12: a resized,
re-encoded or lightly cropped copy never straddles a split; a heavier crop may.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from sgmft.data.manifest import Post

#: the largest Hamming distance (of 64 bits) between the perceptual hashes of near duplicates
NEAR_DUPLICATE_BITS = 12


def connected(keys: Sequence[Sequence[str]]) -> list[int]:
    """Union-find: items sharing any key get one component id (the smallest member index)."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, item_keys in enumerate(keys):
        for key in item_keys:
            if key in first:
                a, b = root(i), root(first[key])
                parent[max(a, b)] = min(a, b)
            else:
                first[key] = i
    return [root(i) for i in range(len(keys))]


def near_duplicate_pairs(hashes: Sequence[str], max_bits: int = NEAR_DUPLICATE_BITS,
                         block: int = 1024) -> list[tuple[int, int]]:
    """Index pairs (i < j) of hex hashes within ``max_bits`` bits of each other.

    All pairs are compared, in blocks of rows (XOR and popcount in NumPy): about a second for
    20,000 distinct images, and memory of ``block`` x N bytes.
    """
    values = np.asarray([int(h, 16) for h in hashes], dtype=np.uint64)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(values), block):
        rows = values[start:start + block]
        distance = np.bitwise_count(rows[:, None] ^ values[None, :])        # (block, N) uint8
        for i, j in zip(*np.nonzero(distance <= max_bits), strict=True):
            if start + i < j:
                pairs.append((int(start + i), int(j)))
    return pairs


def image_keys(posts: Sequence[Post], max_bits: int = NEAR_DUPLICATE_BITS) -> list[list[str]]:
    """Per post, keys that join it to posts with the same image bytes or a near-duplicate image."""
    keys = [[f"image:{p.image_sha256}"] for p in posts]
    distinct = sorted({p.image_phash for p in posts if p.image_phash})
    index = {h: i for i, h in enumerate(distinct)}
    links: list[list[str]] = [[f"near:{i}"] for i in range(len(distinct))]
    for a, b in near_duplicate_pairs(distinct, max_bits):
        links[a].append(f"near:{b}")
    roots = connected(links)
    for post, post_keys in zip(posts, keys, strict=True):
        if post.image_phash:
            post_keys.append(f"near:{roots[index[post.image_phash]]}")
    return keys


def post_groups(posts: Sequence[Post], column: str | None = None,
                max_bits: int = NEAR_DUPLICATE_BITS) -> list[str]:
    """A group name per post. Posts with the same image bytes or near-duplicate images always
    share one. With ``column``, posts share their column value's group, and an image group
    whose posts have several values joins the value most of its posts have (ties: the first
    in sorted order); posts without a value stay with their images.

    Joining on both relations at once (union-find) would chain: two users who each re-posted
    one photo of the other would become one group, and on real data one group swallows most
    posts. Here the number of groups is at most the number of column values (plus the image
    groups of posts without one), and an image never straddles.
    """
    images = connected(image_keys(posts, max_bits))
    if column is None:
        return [f"image:{i}" for i in images]
    votes: dict[int, Counter] = {}
    for post, image in zip(posts, images, strict=True):
        value = post.value(column)
        if value is not None:
            votes.setdefault(image, Counter())[value] += 1
    winner = {image: min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
              for image, counts in votes.items()}
    return [f"{column}:{winner[image]}" if image in winner else f"image:{image}" for image in images]
