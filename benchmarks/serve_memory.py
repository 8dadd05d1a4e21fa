"""The server's memory under concurrent large batches: the probe of issue 31, measured.

    python benchmarks/serve_memory.py [--run RUN] [--clients 8] [--parts 6] [--megabytes 10]
                                      [--rounds 11] [--idle 10] [--out results/serve_memory.json]

A real ``sgmft serve`` process on a free loopback port; ``--clients`` threads each send one
``/predict/batch`` request per round with ``--parts`` images of about ``--megabytes`` MB each
(PNGs of noise, within the upload limit), ``--rounds`` rounds. A 503 (the server's bound on the
bytes in flight) is retried after its ``Retry-After``. The server's RssAnon (``/proc/PID/status``)
is read once started, after one warm-up request of the same shape ("start": what the first
batch allocates for every later one), after each round, and after ``--idle`` seconds idle.
Without --run it trains a small demo run first (benchmarks/serve.py's).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from serve import small_run, start_server  # benchmarks/ is the script's folder


def rss_anon_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc (Linux only)")


def noise_png(megabytes: float, seed: int) -> bytes:
    """A PNG of random pixels of about ``megabytes`` MB (noise does not compress)."""
    side = int((megabytes * 1e6 / 3) ** 0.5)
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def send(url: str, files: list, statuses: Counter) -> None:
    with httpx.Client(timeout=300) as client:
        while True:
            response = client.post(
                url + "/predict/batch", data={"text": ["周末去健身房"] * len(files)}, files=files
            )
            statuses[response.status_code] += 1
            if response.status_code != 503:
                return
            time.sleep(float(response.headers.get("retry-after", "1")))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--parts", type=int, default=6)
    parser.add_argument("--megabytes", type=float, default=9.5)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or small_run(Path(scratch))
        images = [noise_png(args.megabytes, seed) for seed in range(args.parts)]
        files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
        url, process = start_server(run)
        try:
            started = rss_anon_mb(process.pid)
            send(url, files, Counter())  # the first batch of its shape allocates what later ones reuse
            start = rss_anon_mb(process.pid)
            rounds, statuses = [], Counter()
            began = time.perf_counter()
            for _ in range(args.rounds):
                with ThreadPoolExecutor(args.clients) as pool:
                    list(pool.map(lambda _: send(url, files, statuses), range(args.clients)))
                rounds.append(rss_anon_mb(process.pid))
            seconds = time.perf_counter() - began
            time.sleep(args.idle)
            idle = rss_anon_mb(process.pid)
        finally:
            process.terminate()
            process.wait(30)
    result = {
        "clients": args.clients,
        "parts": args.parts,
        "part_mb": round(len(images[0]) / 1e6, 2),
        "rounds": args.rounds,
        "rss_anon_mb": {
            "started": round(started, 1),
            "start": round(start, 1),
            "after_each_round": [round(r, 1) for r in rounds],
            "peak": round(max(rounds), 1),
            f"after_{args.idle:g}_s_idle": round(idle, 1),
        },
        "growth_mb": round(max(rounds) - start, 1),
        "idle_above_start_mb": round(idle - start, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": round(seconds, 1),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
