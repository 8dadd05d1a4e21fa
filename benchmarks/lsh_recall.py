"""Recall of the near-duplicate search at scale: planted pairs at 0-12 bits among random hashes.

    python benchmarks/lsh_recall.py [--sizes 1000000,10000000] [--per-distance 1000]
                                    [--out results/lsh_recall.json]

For each size N: N - 13 x ``--per-distance`` random 64-bit hashes, plus ``--per-distance`` pairs
planted at each distance d = 0..12 bits (a random hash and a copy with d random bits flipped),
shuffled. The search (`sgmft.data.groups.near_duplicate_pairs`, locality-sensitive at any N here)
is timed, its peak RssAnon read, and the share of the planted pairs found reported per distance,
beside what `lsh_plan` promises at that distance.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path

import numpy as np

from sgmft.data.groups import NEAR_DUPLICATE_BITS, lsh_plan, near_duplicate_pairs


def planted(n: int, per_distance: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,) uint64 hashes, (P, 2) the planted pairs' positions, (P,) their distances."""
    rng = np.random.default_rng(seed)
    distances = np.repeat(np.arange(NEAR_DUPLICATE_BITS + 1), per_distance)
    base = rng.integers(0, 2**64, n - len(distances), dtype=np.uint64)
    copies = base[: len(distances)].copy()
    for i, d in enumerate(distances):
        for bit in rng.choice(64, d, replace=False):
            copies[i] ^= np.uint64(1) << np.uint64(bit)
    values = np.concatenate([base, copies])
    order = rng.permutation(n)
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    pairs = np.stack(
        [position[np.arange(len(distances))], position[len(base) + np.arange(len(distances))]], 1
    )
    return values[order], np.sort(pairs, 1), distances


def promised(n: int, d: int) -> float:
    k, tables = lsh_plan(n)
    return 1 - (1 - math.comb(64 - d, k) / math.comb(64, k)) ** tables


def measure(n: int, per_distance: int) -> dict:
    values, pairs, distances = planted(n, per_distance)
    start = time.perf_counter()
    found = near_duplicate_pairs(values, exact_limit=0)
    seconds = time.perf_counter() - start
    keys = found[:, 0] * n + found[:, 1]
    hit = np.isin(pairs[:, 0] * n + pairs[:, 1], keys)
    k, tables = lsh_plan(n)
    return {
        "hashes": n,
        "k": k,
        "tables": tables,
        "seconds": round(seconds, 1),
        "pairs_found": len(found),
        "recall_by_bits": {int(d): round(float(hit[distances == d].mean()), 4) for d in np.unique(distances)},
        "promised_by_bits": {d: round(promised(n, d), 4) for d in range(NEAR_DUPLICATE_BITS + 1)},
        "recall_at_12_bits_or_less": round(float(hit.mean()), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--per-distance", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = []
    for n in map(int, args.sizes.split(",")):
        results.append(measure(n, args.per_distance))
        print(json.dumps(results[-1]), flush=True)
        if args.out:   # after each size: a long run keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
