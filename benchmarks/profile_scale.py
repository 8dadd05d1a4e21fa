"""Time and peak memory of the profile estimators (`sgmft.serving.profiles.profile`, the part of
`sgmft profile` after prediction) against the number of posts: a synthetic predictions file of N
posts (8 labels, Dirichlet probabilities with a class signal, users of 1-200 posts, times over a
week) estimated by user and by hour with every method, each in a fresh process under
OMP_NUM_THREADS=1, with the run's rates synthetic too (2,000 held-out posts in 100 units).

    python benchmarks/profile_scale.py [--sizes 20000,200000,1000000] [--out results/scale_posts]

Peak memory is the process's VmHWM (its largest resident set, the DuckDB reader's buffers and
the population's posts included). Writes profile_scale.json beside the other scale results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

LABELS = ("home", "work", "school", "restaurant", "cinema", "gym", "shopping", "travel")
METHODS = ("cc", "pcc", "acc", "pacc", "emq")
ROWS = 200_000


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / x.sum(1, keepdims=True)


def write_predictions(path: Path, n: int, seed: int = 0) -> None:
    """N synthetic predictions, written ``ROWS`` at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 201, size=n // 50 + 1)
    user_of = np.repeat(np.arange(len(sizes)), sizes)[:n]
    rng.shuffle(user_of)
    writer = None
    for start in range(0, n, ROWS):
        rows = min(ROWS, n - start)
        labels = rng.integers(0, len(LABELS), rows)
        probs = _normalise(rng.gamma(np.full((rows, len(LABELS)), 0.5) + 2.0 * np.eye(len(LABELS))[labels]))
        seconds = rng.integers(0, 7 * 86400, rows) + 1_700_000_000
        table = pa.table(
            {
                "id": [f"p{start + i}" for i in range(rows)],
                "row": np.arange(start, start + rows),
                "by": [f"u{u}" for u in user_of[start : start + rows]],
                "time": np.datetime_as_string(seconds.astype("datetime64[s]")).astype(object),
                "label": np.asarray(LABELS, dtype=object)[probs.argmax(1)],
                "error": pa.nulls(rows, pa.string()),
                **{f"p_{label}": probs[:, k] for k, label in enumerate(LABELS)},
            }
        )
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def measure(predictions: Path, method: str, out: Path) -> dict:
    """In this (fresh) process: the profile by user and hour with ``method``; seconds and VmHWM."""
    from sgmft.quantify.rates import Rates
    from sgmft.serving.profiles import ProfileSpec, profile

    rng = np.random.default_rng(1)
    labels = rng.integers(0, len(LABELS), 2000)
    rates = Rates(
        _normalise(rng.gamma(np.full((2000, len(LABELS)), 0.5) + 2.0 * np.eye(len(LABELS))[labels])),
        labels,
        np.full(len(LABELS), 1 / len(LABELS)),
        np.arange(2000) % 100,
    )
    started = time.perf_counter()
    profile(predictions, list(LABELS), ProfileSpec(by="user", every="hour", method=method), rates, out)
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) * 1024
    return {"method": method, "seconds": round(seconds, 2), "peak_rss_mb": round(peak / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,200000,1000000")
    parser.add_argument("--out", type=Path, default=Path("results/scale_posts"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/sgmft-profile-scale"))
    parser.add_argument("--child", nargs=2, metavar=("PREDICTIONS", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder = args.work / f"out-{args.child[1]}"
        folder.mkdir(parents=True, exist_ok=True)
        print(json.dumps(measure(Path(args.child[0]), args.child[1], folder)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    found = []
    for n in (int(s) for s in args.sizes.split(",")):
        predictions = args.work / f"predictions-{n}.parquet"
        if not predictions.is_file():
            write_predictions(predictions, n)
        for method in METHODS:
            env = os.environ | {"OMP_NUM_THREADS": "1"}
            done = subprocess.run(
                [sys.executable, __file__, "--work", str(args.work), "--child", str(predictions), method],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            record = {"posts": n, **json.loads(done.stdout.strip().splitlines()[-1])}
            found.append(record)
            print(record, file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    from sgmft.provenance import versions

    (args.out / "profile_scale.json").write_text(
        json.dumps(
            {
                "what": "profiles.profile by user and hour, synthetic predictions, a process each",
                "cpu": next(
                    (
                        line.split(":", 1)[1].strip()
                        for line in Path("/proc/cpuinfo").read_text().splitlines()
                        if line.startswith("model name")
                    ),
                    "?",
                ),
                "results": found,
                "versions": versions(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
