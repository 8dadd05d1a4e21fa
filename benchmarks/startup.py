"""Start-up against the number of posts: what a user pays before the first answer, for a run and
cache trained at 20 k and at 1 M posts (the synthetic posts of `scale_posts.py`).

- ``open``: opening the run and its feature cache in a fresh process (`load_run` + `load_cache`:
  what `sgmft evaluate`, `predict`, `profile` and the server do before reading any post);
- ``predict-10``: `sgmft predict RUN --manifest M --out P.jsonl` on a 10-post manifest (posts of
  the cache, so answered from it: the first answer), as a subprocess.

Each is the median of ``--repeats`` runs (the page cache warm after the first); memory is the
peak RssAnon of the process tree (see scale_posts.py). The run is trained with the fast preset,
one epoch, two folds and a 10 % calibration part, so that every file a run keeps (split,
conformal scores, error rates) is at scale.

    python benchmarks/startup.py [--sizes 20000,1000000] [--work /tmp/sgmft-startup]
                                 [--out results/scale_posts]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from scale_posts import make_posts, run

OPEN = """
import sys, time
started = time.perf_counter()
from sgmft.encoders.cache import load_cache
from sgmft.training.rundir import load_run
imported = time.perf_counter()
loaded = load_run(sys.argv[1])
cache = load_cache(sys.argv[2])
opened = time.perf_counter() - imported
print(f"import {imported - started:.3f} s, open {opened:.3f} s, {len(cache)} posts, {loaded.split['kind']}")
"""


def prepare(folder: Path, size: int) -> None:
    """Posts, cache and run of ``size`` posts in ``folder`` (each kept when already there)."""
    if not (folder / "posts.jsonl").is_file():
        make_posts(folder, size)
    if not (folder / "cache" / "cache.json").is_file():
        print(
            size,
            "extract",
            run(["extract", "posts.jsonl", "--from", "features.parquet", "--out", "cache"], folder),
            flush=True,
        )
    if not (folder / "run" / "run.json").is_file():
        print(
            size,
            "train",
            run(
                [
                    "train",
                    "--data",
                    "posts.jsonl",
                    "--cache",
                    "cache",
                    "--out",
                    "run",
                    "--config",
                    "fast",
                    "--set",
                    "train.epochs=1",
                    "--set",
                    "train.folds=2",
                    "--set",
                    "train.calibration=0.1",
                    "--overwrite",
                ],
                folder,
            ),
            flush=True,
        )
    lines = (folder / "posts.jsonl").open(encoding="utf-8")
    (folder / "ten.jsonl").write_text("".join(next(lines) for _ in range(10)), encoding="utf-8")


def measure(folder: Path, repeats: int) -> dict[str, dict]:
    found: dict[str, list] = {"open": [], "predict-10": []}
    for _ in range(repeats):
        found["open"].append(run(["-c", OPEN, "run", "cache"], folder, module=False))
        found["predict-10"].append(
            run(["predict", "run", "--manifest", "ten.jsonl", "--out", "ten.out.jsonl"], folder)
        )
    return {
        name: {
            "seconds": statistics.median(r["seconds"] for r in records),
            "anon_mib": statistics.median(r["anon_mib"] for r in records),
            "every": records,
        }
        for name, records in found.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,1000000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sgmft-startup"))
    parser.add_argument("--out", type=Path, default=Path("results/scale_posts"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        folder = args.work / f"posts-{size}"
        prepare(folder, size)
        results[str(size)] = measure(folder, args.repeats)
        print(size, {k: (v["seconds"], v["anon_mib"]) for k, v in results[str(size)].items()}, flush=True)
    sizes = sorted(results, key=int)
    ratios = {
        name: {
            "seconds": results[sizes[-1]][name]["seconds"] / results[sizes[0]][name]["seconds"],
            "anon_mib": results[sizes[-1]][name]["anon_mib"] / results[sizes[0]][name]["anon_mib"],
        }
        for name in results[sizes[0]]
    }
    from sgmft.provenance import versions

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.json").write_text(
        json.dumps(
            {
                "results": results,
                "ratio_largest_to_smallest": ratios,
                "command": sys.argv,
                "versions": versions(),
            },
            indent=1,
        )
    )
    print(json.dumps(ratios, indent=1))


if __name__ == "__main__":
    main()
