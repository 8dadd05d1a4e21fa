"""Groups of posts that must stay on one side of any split: posts sharing a column's value (an
event, a user), the same image bytes, or near-duplicate images.

**Near duplicates.** Two images are near duplicates when two signals agree: their perceptual
hashes (`sgmft.data.images.perceptual_hash`, 64 bits) differ in at most `NEAR_DUPLICATE_BITS`
bits, and their colour layouts (`sgmft.data.images.colour_layout`) differ by at most
`LAYOUT_LEVELS` on average. Measured on real photos (scikit-image's sample photos,
tests/data/test_groups.py): resizing, JPEG re-encoding and a brightness change move the hash by at
most 6 bits, a 5 % crop by at most 12, a 10 % crop by 6 to 18; two different photos differ by 20
bits or more. The hash sees brightness only, compared with its median, so flat renders of one
shape in other colours land within 12 bits of each other (48 renders of 8 labels: 430 to 540
pairs, most across labels); their layouts differ by more than 5.7 levels in 99 % of those pairs,
while the copies above stay within 3.4 (JPEG quality 30 of a dark photo; the others within 1.7).

**Search, sub-quadratic.** Up to `EXACT_LIMIT` distinct images every pair is compared (XOR and
popcount in blocks). Beyond, pairs are found by bit-sampling locality-sensitive hashing: each of
L tables sorts the hashes by k of their 64 bits and compares neighbours with equal keys, so a
pair within d bits is found with probability 1 - (1 - C(64 - d, k) / C(64, k))^L; k grows with
log2 of the number of images less 1 (a key is shared by about two) and L is chosen for
`LSH_RECALL` (99.5 %) at `LSH_RECALL_BITS` bits: the threshold itself, so every pair the threshold admits
is found with at least that probability, at any N (measured: benchmarks/lsh_recall.py). Cost: L
sorts of N integers, in as many threads as the job has cores (1 M hashes: 603 tables; 10 M:
2,201).

**Groups are the components of the verified pairs.** A pair is verified when both signals
agree (the hash within the threshold, the layouts close); every verified pair's two images are
in one group (connected components), so no verified pair can straddle a split. The second
signal is what keeps this from chaining: on the hash alone, flat renders of one shape in other
colours, or millions of random hashes (about 1.8 pairs per image within 12 bits at 10 million),
would join into one group; their layouts differ. A manifest whose images lack layouts (written
by an older version) is grouped on the hash alone, and the largest group is logged.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow.compute as pc

from sgmft.data.posts import Post, arrow_of, first_seen, values_of
from sgmft.words import plural

log = logging.getLogger(__name__)

#: the largest Hamming distance (of 64 bits) between the perceptual hashes of near duplicates
NEAR_DUPLICATE_BITS = 12
#: the largest mean absolute difference (of 255) between the colour layouts of near duplicates
LAYOUT_LEVELS = 6
#: up to this many distinct images, every pair is compared
EXACT_LIMIT = 20_000
#: the locality-sensitive search finds a pair within LSH_RECALL_BITS bits with this probability
LSH_RECALL, LSH_RECALL_BITS = 0.995, NEAR_DUPLICATE_BITS
#: how the grouping is made; part of the name of a saved split (a change makes new splits)
GROUPING = "components-layout"


def hash_values(hashes: Sequence[str]) -> np.ndarray:
    """Hex perceptual hashes -> (N,) uint64."""
    return np.asarray([int(h, 16) for h in hashes], dtype=np.uint64)


def lsh_plan(n: int, recall: float = LSH_RECALL, bits: int = LSH_RECALL_BITS) -> tuple[int, int]:
    """(bits sampled per table k, tables L) for ``n`` hashes: k about log2 n - 1 (a key is
    shared by about two random hashes: more tables, each with few candidates to verify; the
    fastest at 200 k to 10 M, benchmarks/lsh_recall.py), L for ``recall`` of the pairs within
    ``bits`` bits."""
    k = int(min(32, max(16, math.ceil(math.log2(max(n, 2))) - 1)))
    found = math.comb(64 - bits, k) / math.comb(64, k)
    return k, math.ceil(math.log(1 - recall) / math.log(1 - found))


def _exact_pairs(values: np.ndarray, max_bits: int, block: int = 1024) -> np.ndarray:
    """Every pair (i < j) within ``max_bits``: (M, 2) int64; memory ``block`` x N bytes."""
    found = []
    for start in range(0, len(values), block):
        rows = values[start:start + block]
        distance = np.bitwise_count(rows[:, None] ^ values[None, start:])       # (block, N - start)
        i, j = np.nonzero(distance <= max_bits)
        keep = i < j
        found.append(np.stack([i[keep] + start, j[keep] + start], 1))
    return np.concatenate(found) if found else np.zeros((0, 2), np.int64)


def lsh_threads() -> int:
    """Threads for the tables: ``OMP_NUM_THREADS`` where set (the cores given to the job), else
    the cores this process may use (numpy's sorts and gathers release the GIL)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, int(os.environ.get("OMP_NUM_THREADS") or cores)))


def _table_pairs(values: np.ndarray, plans: Sequence[tuple[np.ndarray, int]], max_bits: int,
                 window: int) -> np.ndarray:
    """The pairs found by the tables ``plans`` (sampled bits (k,), an odd multiplier each), as
    unique i * N + j (i < j) int64. A table's key is the top 64 - b bits of the masked hash times
    the multiplier (multiply-shift hashing: equal sampled bits give equal keys, different ones
    share a key with probability about 2^(b - 63), a candidate more to verify, not a pair), its
    index in the low b bits; one sort of plain integers puts equal keys together in order of
    index. Within a run of equal keys each hash meets the ``window`` hashes after it. The
    N-sized arrays are allocated once, not per table (a fresh 80 MB array at 10 M hashes costs
    more in page faults than its sort)."""
    n = len(values)
    index_bits = max(1, (n - 1).bit_length())
    low = np.uint64((1 << index_bits) - 1)
    packed, order, hashes = (np.empty(n, np.uint64) for _ in range(3))
    keys = np.empty(n + window + 1, np.uint64)       # past the end: a key no hash has
    same = np.empty(max(n - 1, 0), bool)
    positions = np.arange(n, dtype=np.uint64)
    index = order.view(np.int64)
    found = np.zeros(0, np.int64)
    fresh: list[np.ndarray] = []
    for table, (bits, multiplier) in enumerate(plans):
        np.bitwise_and(values, np.uint64(sum(1 << int(b) for b in bits)), out=packed)
        packed *= np.uint64(multiplier)
        packed &= ~low
        packed |= positions
        packed.sort()
        np.right_shift(packed, np.uint64(index_bits), out=keys[:n])
        keys[n:] = keys[n - 1] + np.uint64(1)
        np.bitwise_and(packed, low, out=order)
        np.take(values, index, out=hashes)
        start = np.flatnonzero(np.equal(keys[1:n], keys[:n - 1], out=same))   # the next hash shares the key
        for offset in range(1, window + 1):
            if offset > 1:               # runs are contiguous: a run reaching offset reached offset - 1
                start = start[keys[start + offset] == keys[start]]
            if not len(start):
                break
            close = start[np.bitwise_count(hashes[start] ^ hashes[start + offset]) <= max_bits]
            i, j = index[close], index[close + offset]
            fresh.append(np.minimum(i, j) * n + np.maximum(i, j))
        if fresh and (table % 16 == 15 or table == len(plans) - 1):   # a table finds mostly the same pairs
            found = np.unique(np.concatenate([found, *fresh]))
            fresh = []
    return found


def _lsh_pairs(values: np.ndarray, max_bits: int, seed: int = 0, window: int = 32,
               threads: int | None = None) -> np.ndarray:
    """Pairs (i < j) within ``max_bits`` found by bit sampling (see the module docstring):
    (M, 2) int64, the same for any number of ``threads`` (the tables are drawn first, in order).
    Degenerate runs of equal keys (thousands of flat images) cost N x ``window``, not their square."""
    if len(values) < 2:
        return np.zeros((0, 2), np.int64)
    k, tables = lsh_plan(len(values))
    rng = np.random.default_rng(seed)
    plans = [(rng.choice(64, k, replace=False), int(rng.integers(0, 2**63)) * 2 + 1) for _ in range(tables)]
    threads = min(threads or lsh_threads(), tables)
    with ThreadPoolExecutor(threads) as pool:
        parts = pool.map(lambda t: _table_pairs(values, plans[t::threads], max_bits, window), range(threads))
        found = np.unique(np.concatenate(list(parts)))
    n = len(values)
    return np.stack([found // n, found % n], 1)


def near_duplicate_pairs(hashes: Sequence[str] | np.ndarray, max_bits: int = NEAR_DUPLICATE_BITS,
                         layouts: np.ndarray | None = None, exact_limit: int = EXACT_LIMIT) -> np.ndarray:
    """Index pairs (i < j), (M, 2) int64, of images within ``max_bits`` bits whose colour
    layouts (``layouts``, (N, 32) uint8, when given) also agree."""
    values = hashes if isinstance(hashes, np.ndarray) else hash_values(hashes)
    pairs = _exact_pairs(values, max_bits) if len(values) <= exact_limit else _lsh_pairs(values, max_bits)
    if layouts is not None and len(pairs):
        gap = np.abs(layouts[pairs[:, 0]].astype(np.int16) - layouts[pairs[:, 1]]).mean(1)
        pairs = pairs[gap <= LAYOUT_LEVELS]
    return pairs


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """(N,) the representative of each item's group: the lowest index of its connected
    component over ``pairs`` (M, 2)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(pairs):
        return np.arange(n)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    lowest = np.full(label.max() + 1, n, np.int64)
    np.minimum.at(lowest, label, np.arange(n))
    return lowest[label]


def _layouts(layouts: Sequence[str | None]) -> np.ndarray | None:
    """(N, 32) uint8 colour layouts from their hex, or None when any image lacks one (then the
    hash alone)."""
    if any(layout is None for layout in layouts):
        return None
    return np.frombuffer(bytes.fromhex("".join(layouts)),  # type: ignore[arg-type]
                         np.uint8).reshape(len(layouts), -1)


def image_groups(posts: Sequence[Post], max_bits: int = NEAR_DUPLICATE_BITS) -> list[int]:
    """Per post, the index of the first post of its image group: the same image bytes, or a
    near-duplicate image, through any chain of verified pairs (see the module docstring)."""
    code, first = first_seen(arrow_of(posts, "image_sha256"))   # distinct image of each post, its first post
    phashes = arrow_of(posts, "image_phash").take(first)
    hashed = np.flatnonzero(pc.fill_null(pc.not_equal(phashes, ""), False).to_numpy(zero_copy_only=False))
    if len(hashed) > 1:
        layouts = arrow_of(posts, "image_layout").take(first[hashed]).to_pylist()
        pairs = near_duplicate_pairs(phashes.take(hashed).to_pylist(), max_bits, _layouts(layouts))
    else:
        pairs = np.zeros((0, 2), np.int64)
    root = first.copy()
    root[hashed] = first[hashed[components(len(hashed), pairs)]]
    if len(pairs):
        sizes = np.bincount(root[hashed])
        log.info("near-duplicate images: %s verified, in groups of up to %s", plural(len(pairs), "pair"),
                 plural(int(sizes.max()), "image"))
    return root[code].tolist()


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
    images = image_groups(posts, max_bits)
    if column is None:
        return [f"image:{i}" for i in images]
    votes: dict[int, Counter] = {}
    for value, image in zip(values_of(posts, column), images, strict=True):
        if value is not None:
            votes.setdefault(image, Counter())[value] += 1
    winner = {image: min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
              for image, counts in votes.items()}
    return [f"{column}:{winner[image]}" if image in winner else f"image:{image}" for image in images]
