"""A bounded load test of `sgmft serve` on 127.0.0.1: requests/s and latency percentiles.

    python benchmarks/serve.py [--run RUN] [--requests 200] [--concurrency 1,4,16]

Without --run it makes the demo set and trains a small run first. The server runs in this
process (uvicorn in a thread) on a free loopback port; each level sends a fixed number of
POST /predict requests (text + a JPEG image, as a browser would) from a thread pool with
httpx, then stops. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image


def small_run(folder: Path) -> Path:
    from sgmft.data.demo import make_demo
    from sgmft.training.config import resolve_config
    from sgmft.training.run import train_run

    manifest = make_demo(folder / "data", posts_per_class=10)
    config = resolve_config("fast", [f"data.manifest={manifest}", "train.epochs=10"])
    return train_run(config, folder / "run", progress=False)


def start_server(run: Path) -> tuple[str, object]:
    import uvicorn

    from sgmft.serving.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(run), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", default="1,4,16")
    args = parser.parse_args()
    buffer = io.BytesIO()
    Image.effect_noise((640, 480), 60).convert("RGB").save(buffer, format="JPEG", quality=85)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or small_run(Path(tmp))
        url, server = start_server(run)
        level(url, 10, 2, buffer.getvalue())  # warm-up
        print(f"POST /predict, text + 640x480 JPEG, {args.requests} requests per level")
        for concurrency in map(int, args.concurrency.split(",")):
            r = level(url, args.requests, concurrency, buffer.getvalue())
            print(f"  concurrency {concurrency:3d}: {r['rps']:6.1f} req/s  p50 {r['p50']:6.1f} ms  "
                  f"p95 {r['p95']:6.1f} ms  p99 {r['p99']:6.1f} ms  failures {r['failures']}",
                  flush=True)
        server.should_exit = True


if __name__ == "__main__":
    main()
