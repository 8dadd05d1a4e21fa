"""Small data in seconds: wall time, CPU time and test accuracy of `sgmft train` (default preset)
on small sets, quiet and beside busy processes, with the thread count and epoch cap of before
(torch's threads, min_steps stretching without a cap) and of now (one thread below
`ONE_THREAD_POSTS` posts, at most `train.max_epochs` epochs).

    python benchmarks/small_data.py [--sizes 50,200] [--busy 2] [--out results/small_data.json]

Sets: the demo set (240 posts), and seeded stratified samples of mvsa-lab5 (``--sizes``, from
``../shared/data/mvsa-lab5`` when present). Each training is a fresh ``sgmft train`` process
after its features are extracted once; CPU time is the process's (user + system). "Busy" runs
``--busy`` spinning processes beside it on the same cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MVSA = ROOT.parent / "shared" / "data" / "mvsa-lab5"
SETTINGS = {"before": ["--set", "train.threads=2", "--set", "train.max_epochs=1000000"], "now": []}


def spin() -> None:
    while True:
        pass


def sample(folder: Path, size: int, seed: int = 0) -> Path:
    """A stratified sample of mvsa-lab5 (its image paths stay relative: read with --image-root)."""
    rows = [json.loads(line) for line in (MVSA / "labels.jsonl").read_text(encoding="utf-8").splitlines()]
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    rng = random.Random(seed)
    chosen = []
    for _, members in sorted(by_label.items()):
        share = max(2, round(size * len(members) / len(rows)))
        chosen += rng.sample(members, share)
    path = folder / f"mvsa-{size}" / "posts.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen), encoding="utf-8")
    return path


def sgmft(*arguments: str) -> tuple[float, float]:
    """Run ``sgmft ARGUMENTS``; its wall and CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sgmft", *arguments], check=True, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - start, cpu


def measure(name: str, manifest: Path, image_root: Path | None, folder: Path, busy: int) -> list[dict]:
    root = (
        ["--image-root", str(image_root), "--skip-invalid"] if image_root else []
    )  # real data: some rows bad
    sgmft("extract", str(manifest), *root)
    rows = []
    for load in ("quiet", "busy"):
        spinners = [
            multiprocessing.Process(target=spin, daemon=True) for _ in range(busy if load == "busy" else 0)
        ]
        for process in spinners:
            process.start()
        try:
            for setting, extra in SETTINGS.items():
                run = folder / f"{name}-{load}-{setting}"
                wall, cpu = sgmft(
                    "train", "--data", str(manifest), "--out", str(run), "--overwrite", *root, *extra
                )
                sgmft("evaluate", str(run), "--no-figures")
                metrics = json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))
                info = json.loads((run / "run.json").read_text(encoding="utf-8"))
                rows.append(
                    {
                        "set": name,
                        "load": load,
                        "setting": setting,
                        "wall_s": round(wall, 1),
                        "cpu_s": round(cpu, 1),
                        "accuracy": round(metrics["accuracy"], 4),
                        "test_posts": metrics["n"],
                        "epochs": len(info["history"]),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        finally:
            for process in spinners:
                process.terminate()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="50,200")
    parser.add_argument("--busy", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, help="JSON of the rows; the sets it holds already are not run again"
    )
    args = parser.parse_args()
    rows = json.loads(args.out.read_text(encoding="utf-8")) if args.out and args.out.is_file() else []

    def done(name: str) -> bool:
        return any(row["set"] == name for row in rows)

    def keep(found: list[dict]) -> None:
        rows.extend(found)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if not done("demo-240"):
            subprocess.run(
                [sys.executable, "-m", "sgmft", "demo", str(folder / "demo")], check=True, capture_output=True
            )
            keep(measure("demo-240", folder / "demo" / "manifest.jsonl", None, folder, args.busy))
        for size in map(int, args.sizes.split(",")) if MVSA.is_dir() else ():
            if not done(f"mvsa-{size}"):
                keep(measure(f"mvsa-{size}", sample(folder, size), MVSA, folder, args.busy))


if __name__ == "__main__":
    main()
