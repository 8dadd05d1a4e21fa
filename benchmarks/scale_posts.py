"""Memory and time of every stage against the number of posts: synthetic posts (distinct 16 x 16
images, three labels, a user column) whose features (512 + 1,280 wide, with a class signal) are
imported from Parquet, at 20 k, 200 k and 1 M posts by default.

    python benchmarks/scale_posts.py [--sizes 20000,200000,1000000] [--out results/scale_posts]
                                     [--stages validate,groups,extract,fast,default,predict,profile]
                                     [--dtype float32|float16]

Each stage runs `sgmft` as a subprocess (start-up counted, as a user pays it) under
OMP_NUM_THREADS=1; its peak anonymous memory is the largest sum of RssAnon over the process and
its descendants, sampled every 0.1 s (pages of memory-mapped files are not anonymous: the
feature cache read in place does not count, as it does not count against a machine's memory).
`groups` times the near-duplicate grouping alone, in process. The default preset (`default`) is
measured up to --default-max posts. ``--dtype float16`` stores the features in half precision
(`extract --dtype float16`; its cache, runs and outputs are named with the dtype, beside the
float32 ones). Writes results.json, scale.png and a table with the fitted
power laws (time = a N^b) and their projections to 10 M and 100 M posts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

STAGES = ("validate", "groups", "extract", "fast", "default", "predict", "profile")


def rss_anon(process: psutil.Process) -> int:
    """RssAnon of one process in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{process.pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeAnon:
    """Peak of the summed anonymous memory of a process and its descendants."""

    def __init__(self, pid: int):
        self.root, self.peak = psutil.Process(pid), 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.is_set():
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                tree = []
            self.peak = max(self.peak, sum(rss_anon(p) for p in tree))
            self._done.wait(0.1)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


def run(arguments: list[str], cwd: Path, module: bool = True) -> dict[str, float]:
    """Run ``sgmft ARGUMENTS`` (``module`` False: ``python ARGUMENTS``); its seconds, peak anonymous
    MiB and last line of output (an error stops the benchmark)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "SGMFT_CACHE": str(cwd / ".sgmft-cache")}
    started = time.perf_counter()
    command = [sys.executable, "-m", "sgmft", *arguments] if module else [sys.executable, *arguments]
    process = subprocess.Popen(command, cwd=cwd, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    meter = TreeAnon(process.pid)
    output, _ = process.communicate()
    peak = meter.stop()
    seconds = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"sgmft {' '.join(arguments)} failed ({process.returncode}):\n{output[-3000:]}")
    last = output.strip().splitlines()[-1] if output.strip() else ""
    return {"seconds": round(seconds, 2), "anon_mib": round(peak / 2**20, 1), "said": last[-300:]}


def make_posts(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` posts: distinct 16 x 16 PNGs (a post's index in its pixels), three labels, n / 20
    users; and features.parquet with a class signal."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = folder / "img"
    images.mkdir(parents=True, exist_ok=True)
    labels = rng.integers(0, 3, n)
    words = {0: "在家 沙发 休息 周末", 1: "公司 加班 会议 报告", 2: "健身房 跑步 练腿 出汗"}
    with open(folder / "posts.jsonl", "w", encoding="utf-8") as handle:
        for i in range(n):
            name = f"img/{i // 10000:03d}/{i}.png"
            if i % 10000 == 0:
                (images / f"{i // 10000:03d}").mkdir(exist_ok=True)
            pixels = np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name, compress_level=1)
            label = int(labels[i])
            text = " ".join(rng.choice(words[label].split(), 2)) + f" 第{i}条"
            row = {"id": f"p{i}", "text": text, "image": name, "label": ("home", "work", "gym")[label],
                   "user": f"u{i % max(1, n // 20)}"}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    schema = pa.schema([("id", pa.string()), ("text", pa.list_(pa.float32(), 512)),
                        ("image", pa.list_(pa.float32(), 1280))])
    with pq.ParquetWriter(folder / "features.parquet", schema) as writer:
        for start in range(0, n, 20000):
            part = np.arange(start, min(n, start + 20000))
            signal = np.eye(3, dtype=np.float32)[labels[part]]
            columns = {}
            for name, width in (("text", 512), ("image", 1280)):
                values = rng.normal(size=(len(part), width)).astype(np.float32)
                values[:, :3] += 1.5 * signal
                columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), width)
            writer.write_table(pa.table({"id": [f"p{i}" for i in part], **columns}, schema=schema))
    return folder / "posts.jsonl"


def time_groups(manifest: Path) -> dict[str, float]:
    """The near-duplicate grouping alone (manifest loaded first, not counted; with the image
    checks the subprocesses recorded)."""
    from sgmft.data.groups import post_groups
    from sgmft.data.manifest import load_manifest

    os.environ["SGMFT_CACHE"] = str(manifest.parent / ".sgmft-cache")
    posts = load_manifest(manifest).posts
    started = time.perf_counter()
    groups = post_groups(posts)
    return {"seconds": round(time.perf_counter() - started, 2), "groups": len(set(groups))}


def hashes_only(n: int) -> float:
    """Seconds to find near-duplicate pairs among ``n`` random 64-bit hashes with 10 % planted
    copies, and to group them."""
    from sgmft.data.groups import components, near_duplicate_pairs

    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, n // 10).astype(np.uint64)
    copies = values[rng.integers(0, n, n // 10)] ^ flips
    values = np.concatenate([values, copies])
    started = time.perf_counter()
    components(len(values), near_duplicate_pairs(values))
    return round(time.perf_counter() - started, 1)


def measure(size: int, root: Path, stages: tuple[str, ...], default_max: int,
            dtype: str = "float32") -> dict[str, dict]:
    folder = root / f"posts-{size}"
    manifest = folder / "posts.jsonl"
    if not manifest.is_file():
        started = time.perf_counter()
        make_posts(folder, size)
        print(f"  made {size} posts in {time.perf_counter() - started:.0f} s", flush=True)
    found: dict[str, dict] = {}
    tag = "" if dtype == "float32" else f"-{dtype}"
    cache, fast = f"cache{tag}", f"run-fast{tag}"
    steps = {
        "validate": ["validate", "posts.jsonl"],
        "extract": ["extract", "posts.jsonl", "--from", "features.parquet", "--out", cache, "--dtype", dtype],
        "fast": ["train", "--data", "posts.jsonl", "--cache", cache, "--out", fast,
                 "--config", "fast", "--set", "train.epochs=2", "--overwrite"],
        "default": ["train", "--data", "posts.jsonl", "--cache", cache, "--out", f"run-default{tag}",
                    "--overwrite"],
        "predict": ["predict", fast, "--manifest", "posts.jsonl", "--out", f"preds{tag}.parquet"],
        "profile": ["profile", fast, "--manifest", "posts.jsonl", "--out", f"profiles{tag}"],
    }
    for stage in STAGES:
        if stage not in stages or (stage == "default" and size > default_max):
            continue
        found[stage] = time_groups(manifest) if stage == "groups" else run(steps[stage], folder)
        print(f"  {size:>9,} {stage:9s} {json.dumps(found[stage])}", flush=True)
    return found


def power_law(sizes: list[int], values: list[float]) -> tuple[float, float]:
    """(a, b) of value = a N^b, least squares in log-log."""
    b, log_a = np.polyfit(np.log(sizes), np.log(values), 1)
    return math.exp(log_a), b


def report(results: dict[str, dict[str, dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(int(s) for s in results)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    lines = ["| stage | " + " | ".join(f"{n:,} posts" for n in sizes) + " | time ~ N^b | 10 M | 100 M |",
             "|---|" + "---|" * len(sizes) + "---|---|---|"]
    for number, stage in enumerate(STAGES):
        have = [n for n in sizes if stage in results[str(n)]]
        if not have:
            continue
        seconds = [results[str(n)][stage]["seconds"] for n in have]
        memory = [results[str(n)][stage].get("anon_mib") for n in have]
        left.loglog(have, seconds, "o-", label=stage, color=f"C{number}")
        if memory[0] is not None:
            right.semilogx(have, memory, "o-", label=stage, color=f"C{number}")
        cells = [f"{s:,.0f} s" + (f", {m:,.0f} MiB" if m is not None else "") for s, m in
                 zip(seconds, memory, strict=True)]
        cells += [""] * (len(sizes) - len(cells))
        if len(have) >= 2:
            a, b = power_law(have, seconds)
            projected = [f"{a * n ** b / 3600:,.1f} h" for n in (10**7, 10**8)]
            lines.append(f"| {stage} | " + " | ".join(cells) + f" | {b:.2f} | "
                         + " | ".join(projected) + " |")
        else:
            lines.append(f"| {stage} | " + " | ".join(cells) + " | | | |")
    left.set(xlabel="posts", ylabel="seconds", title="time per stage")
    right.set(xlabel="posts", ylabel="peak anonymous MiB", title="memory per stage")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "scale.png", dpi=110)
    (out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,200000,1000000")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/sgmft-scale"))
    parser.add_argument("--out", type=Path, default=Path("results/scale_posts"))
    parser.add_argument("--default-max", type=int, default=200_000)
    parser.add_argument("--hashes", default="1000000,10000000", help="sizes for the grouping of hashes alone")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                        help="the features' storage (extract --dtype)")
    parser.add_argument("--report-only", action="store_true",
                        help="redraw the table and plot from results.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if args.report_only:
        report({k: v for k, v in results.items() if k.isdigit()}, args.out)
        return
    for size in (int(s) for s in args.sizes.split(",") if s):
        print(f"{size:,} posts", flush=True)
        results.setdefault(str(size), {}).update(measure(size, args.work, tuple(args.stages.split(",")),
                                                         args.default_max, args.dtype))
        path.write_text(json.dumps(results, indent=1))
    hashes = {n: hashes_only(int(n)) for n in args.hashes.split(",") if n}
    if hashes:
        print("grouping random hashes (+10 % near copies):", hashes, "seconds")
        results["hashes_seconds"] = hashes
    path.write_text(json.dumps(results, indent=1))
    report({k: v for k, v in results.items() if k.isdigit()}, args.out)


if __name__ == "__main__":
    main()
