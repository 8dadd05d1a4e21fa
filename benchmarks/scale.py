"""Scale-out measurements on the demo set: extraction posts/s locally and on a local Ray cluster
(1 and 2 encoder actors), fp32 against bf16 image encoding, and training samples/s in 1 and
2 DDP processes; each with the peak resident memory of its whole process tree.

    python benchmarks/scale.py [--posts-per-class 30] [--skip ray,ddp,bf16]

Every measurement runs `sgmft` as a subprocess in a fresh folder, so start-up (imports, model
loading, a Ray cluster, torchrun's rendezvous) is counted, as a user would pay it; the line
also gives the time without start-up where it can be read off. bf16 also reports how far its
features are from fp32's (cosine similarity per post).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil


class TreeRSS:
    """Peak of the summed resident memory of a process and all its descendants."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.is_set():
            total = 0
            try:
                for process in [self.root, *self.root.children(recursive=True)]:
                    total += process.memory_info().rss
            except psutil.Error:
                pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


def sgmft(*arguments: str, cwd: Path) -> tuple[float, int]:
    """(wall seconds, peak tree RSS in bytes) of one `sgmft` command; raises on failure."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "sgmft", *arguments], cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rss = TreeRSS(process.pid)
    output, _ = process.communicate()
    peak = rss.stop()
    if process.returncode:
        raise RuntimeError(f"sgmft {' '.join(arguments)} failed:\n{output[-3000:]}")
    return time.perf_counter() - started, peak


def report(name: str, count: int, unit: str, seconds: float, peak: int, note: str = "") -> None:
    line = f"  {name:28s} {count / seconds:7.1f} {unit}/s  ({seconds:6.1f} s)  peak RSS {peak >> 20:5d} MiB"
    print(line + (f"  {note}" if note else ""), flush=True)


def extraction(folder: Path, manifest: Path, skip: set[str]) -> None:
    posts = len(manifest.read_text().splitlines())
    print(f"extraction, {posts} posts (use+effnet, each run into a fresh cache, start-up included)")
    from sgmft.device import native_cpu_bf16, resolve_precision

    auto = resolve_precision("auto")
    native = "computes bf16 natively (AMX or AVX512-BF16)" if native_cpu_bf16() else "has no native bf16"
    print(f"  this CPU {native}: --precision auto (the default) takes {auto}")
    runs = [("local fp32", ["--precision", "fp32"]), (f"local auto ({auto})", [])]
    if "bf16" not in skip:
        runs.append(("local bf16", ["--precision", "bf16"]))
    if "ray" not in skip:
        runs += [("ray, 1 worker", ["--ray", "local", "--workers", "1"]),
                 ("ray, 2 workers", ["--ray", "local", "--workers", "2"])]
    for name, extra in runs:
        out = folder / name.split(" (")[0].replace(" ", "-").replace(",", "")
        seconds, peak = sgmft("extract", str(manifest), "--out", str(out), *extra, cwd=folder)
        report(name, posts, "posts", seconds, peak)
    if "bf16" not in skip:
        compare_bf16(folder / "local-fp32", folder / "local-bf16")


def compare_bf16(fp32: Path, bf16: Path) -> None:
    from sgmft.encoders.cache import load_cache

    a, b = load_cache(fp32).image, load_cache(bf16).image
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"  bf16 image features against fp32: cosine similarity min {cosine.min():.5f}, "
          f"mean {cosine.mean():.5f}")


def training(folder: Path, manifest: Path) -> None:
    common = ["--config", "fast", "--set", "train.epochs=30", "--set", "train.batch_size=32",
              "--set", "train.checkpoint_seconds=60"]
    sgmft("extract", str(manifest), cwd=folder)
    print("training, the fast preset (D = 64), 30 epochs, global batch 32, start-up included")
    for name, extra in (("1 process", []), ("2 DDP processes (gloo)", ["--nproc", "2"])):
        run = folder / name.split()[0]
        seconds, peak = sgmft("train", "--data", str(manifest), "--out", str(run), *common, *extra,
                              cwd=folder)
        info = json.loads((run / "run.json").read_text())
        samples = info["split"]["train"] * len(info["history"])
        report(name, samples, "samples", seconds, peak,
               f"training loop alone {samples / info['seconds']:.0f} samples/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts-per-class", type=int, default=30)
    parser.add_argument("--skip", default="", help="comma-separated: ray, ddp, bf16")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    from sgmft.data.demo import make_demo

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_demo(folder / "data", posts_per_class=args.posts_per_class)
        print(f"{os.cpu_count()} CPU(s)")
        extraction(folder, manifest, skip)
        if "ddp" not in skip:
            training(folder, manifest)


if __name__ == "__main__":
    main()
