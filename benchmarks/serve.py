"""A bounded load test of `sgmft serve` on 127.0.0.1: requests/s, latency percentiles, and a
hostile mix.

    python benchmarks/serve.py [--run RUN] [--requests 200] [--concurrency 1,4,16] [--hostile 400]

Without --run it makes the demo set and trains a small run first. The server is a real
``sgmft serve`` process on a free loopback port, so its memory can be read apart from the
client's. Each level sends a fixed number of POST /predict requests (text + a JPEG, as a browser
would) from a thread pool with httpx. ``--hostile N`` then sends N requests at concurrency 16,
a mix of normal posts, over-long texts, pixel bombs (one 8000x8001 PNG; 40 images of 8000x8000
in one batch), malformed multipart bodies, random bytes as images and large real photos, and
reports the status codes, 5xx and timeouts, and the server's peak RSS before, during and after.
Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from PIL import Image
from scale import TreeRSS  # benchmarks/ is the script's folder


def small_run(folder: Path) -> Path:
    from sgmft.data.demo import make_demo
    from sgmft.training.config import resolve_config
    from sgmft.training.run import train_run

    manifest = make_demo(folder / "data", posts_per_class=10)
    config = resolve_config("fast", [f"data.manifest={manifest}", "train.epochs=10"])
    return train_run(config, folder / "run", progress=False)


def start_server(run: Path) -> tuple[str, subprocess.Popen]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "sgmft", "serve", str(run), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return url, process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not start")


def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 85} if fmt == "JPEG" else {"compress_level": 9}))
    return buffer.getvalue()


def level(url: str, requests: int, concurrency: int, image: bytes) -> dict:
    latencies: list[float] = []
    failures = 0

    with httpx.Client(timeout=60) as client:
        def one(i: int) -> None:
            nonlocal failures
            start = time.perf_counter()
            response = client.post(url + "/predict", data={"text": f"周末去健身房锻炼 {i}"},
                                   files={"image": ("a.jpg", image, "image/jpeg")})
            latencies.append(time.perf_counter() - start)
            failures += response.status_code != 200

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {"rps": requests / elapsed, "p50": cuts[49] * 1000, "p95": cuts[94] * 1000,
            "p99": cuts[98] * 1000, "failures": failures}


def hostile_requests(image: bytes) -> dict[str, dict]:
    """name -> httpx.post keyword arguments (path included)."""
    bomb = encode(Image.new("L", (8000, 8001)), "PNG")          # one image over 64 megapixels
    big = encode(Image.new("L", (8000, 8000)), "PNG")           # at the limit; 40 of them per batch
    photo = encode(Image.effect_noise((4000, 3000), 60).convert("RGB"))
    noise = os.urandom(50_000)
    jpeg = "image/jpeg"
    return {
        "normal": {"path": "/predict", "data": {"text": "在公司加班"},
                   "files": {"image": ("a.jpg", image, jpeg)}},
        "long text": {"path": "/predict", "data": {"text": "字" * 30_000}},
        "pixel bomb": {"path": "/predict", "files": {"image": ("b.png", bomb, "image/png")}},
        "bomb batch": {"path": "/predict/batch", "data": {"text": ["x"] * 40},
                       "files": [("image", (f"{i}.png", big, "image/png")) for i in range(40)]},
        "bad multipart": {"path": "/predict", "content": b"--x\r\nContent-Disposition: form-data\r\n\r\nhalf",
                          "headers": {"content-type": "multipart/form-data; boundary=x"}},
        "random bytes": {"path": "/predict", "files": {"image": ("r.jpg", noise, jpeg)}},
        "12 MP photo": {"path": "/predict", "data": {"text": "旅行"},
                        "files": {"image": ("p.jpg", photo, jpeg)}},
    }


def hostile(url: str, requests: int, image: bytes, pid: int) -> None:
    kinds = hostile_requests(image)
    plan = [random.Random(i).choice(list(kinds)) for i in range(requests)]
    statuses: Counter = Counter()
    timeouts = 0
    before = psutil.Process(pid).memory_info().rss

    with httpx.Client(timeout=120) as client:
        def one(kind: str) -> None:
            nonlocal timeouts
            request = dict(kinds[kind])
            path = request.pop("path")
            try:
                statuses[kind, client.post(url + path, **request).status_code] += 1
            except httpx.TimeoutException:
                timeouts += 1

        during = TreeRSS(pid)
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, plan))
        elapsed = time.perf_counter() - started
        peak = during.stop()
    time.sleep(2)
    after = psutil.Process(pid).memory_info().rss
    health = httpx.get(url + "/health", timeout=10).status_code
    server_errors = sum(n for (_, status), n in statuses.items() if status >= 500)
    print(f"hostile mix: {requests} requests at concurrency 16 in {elapsed:.1f} s")
    for (kind, status), n in sorted(statuses.items()):
        print(f"  {kind:14s} {status}  x{n}")
    print(f"  5xx: {server_errors}  timeouts: {timeouts}  /health after: {health}")
    print(f"  server RSS: before {before / 2**20:.0f} MiB, peak during {peak / 2**20:.0f} MiB, "
          f"after {after / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--hostile", type=int, default=0, help="requests of the hostile mix (0: none)")
    args = parser.parse_args()
    image = encode(Image.effect_noise((640, 480), 60).convert("RGB"))
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or small_run(Path(tmp))
        url, server = start_server(run)
        try:
            level(url, 10, 2, image)  # warm-up
            print(f"POST /predict, text + 640x480 JPEG, {args.requests} requests per level")
            for concurrency in map(int, args.concurrency.split(",")):
                r = level(url, args.requests, concurrency, image)
                print(f"  concurrency {concurrency:3d}: {r['rps']:6.1f} req/s  p50 {r['p50']:6.1f} ms  "
                      f"p95 {r['p95']:6.1f} ms  p99 {r['p99']:6.1f} ms  failures {r['failures']}",
                      flush=True)
            if args.hostile:
                hostile(url, args.hostile, image, server.pid)
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
