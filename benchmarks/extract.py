"""Extraction speed of the default encoders: batched vs one post at a time, and peak memory.

    python benchmarks/extract.py [--posts 96] [--encoder e5+effnet]

Each mode runs in its own process (so peak RSS is its own) on a fresh demo set with unique
images, cache written to a temp folder. Prints posts/s and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sgmft.encoders import DEFAULT_ENCODER


def one_run(posts: int, encoder: str, batch_size: int) -> dict:
    from sgmft import PLACES
    from sgmft.data.demo import make_demo
    from sgmft.data.manifest import load_manifest
    from sgmft.encoders import create_encoder
    from sgmft.encoders.cache import extract_features

    with tempfile.TemporaryDirectory() as tmp:
        manifest = load_manifest(make_demo(Path(tmp) / "data", -(-posts // len(PLACES))))
        model = create_encoder(encoder)  # loaded before the clock starts
        start = time.perf_counter()
        extract_features(manifest, Path(tmp) / "features", encoder,
                         encoder_factory=lambda **_: model, batch_size=batch_size,
                         progress=False)
        seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"posts": len(manifest), "batch_size": batch_size, "seconds": round(seconds, 2),
            "posts_per_s": round(len(manifest) / seconds, 1), "peak_rss_mib": round(peak_mib)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=96)
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--batch-size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_size is not None:
        print(json.dumps(one_run(args.posts, args.encoder, args.batch_size)))
        return
    print(f"encoder {args.encoder}, {args.posts} posts, unique images")
    for batch_size in (32, 1):
        out = subprocess.run([sys.executable, __file__, "--posts", str(args.posts), "--encoder",
                              args.encoder, "--batch-size", str(batch_size)],
                             check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        mode = "batched (32)" if batch_size > 1 else "one at a time"
        print(f"  {mode:14s} {result['posts_per_s']:7.1f} posts/s  "
              f"({result['seconds']} s)  peak RSS {result['peak_rss_mib']} MiB")


if __name__ == "__main__":
    main()
