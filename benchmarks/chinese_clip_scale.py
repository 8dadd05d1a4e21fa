"""The paper's backbone at its own size: Chinese-CLIP ViT-H/14 with RoBERTa-wwm-ext-large.

    python benchmarks/chinese_clip_scale.py [--images 4] [--texts 16] [--out results/...json]

Builds the model with the official ``cn_clip`` code (random weights, about 960 M parameters),
saves it as an official release file, loads it through sgmft (converted to `transformers`),
checks once that sgmft's text and image features equal the official ``encode_text`` and
``encode_image`` (relative 1e-4, fp32), then times sgmft's image and text encoding in fp32 and
bf16, each precision in a process of its own (posts per second, peak resident memory), and
estimates the hours of extraction for 17,000 and 1,000,000 posts. Needs ``cn-clip`` (installed
by scripts/setup.sh without its dependencies), about 12 GB of memory and a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# the official model's helpers live in the equivalence test (tests/encoders/)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def official_classes():
    """cn_clip's tokenize and CLIP class, imported without torchvision (see the equivalence test)."""
    from tests.encoders.test_chinese_clip_official import config_of, import_official

    clip, clip_class = import_official()
    return clip, clip_class, config_of


def texts(count: int) -> list[str]:
    from tests.encoders.test_chinese_clip_official import weibo_texts

    return weibo_texts(count, seed=3)


def photos(count: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)) for _ in range(count)]


def build(folder: Path) -> tuple[Path, dict]:
    """The official ViT-H/14 + RoBERTa-large model with seeded random weights, saved as a
    release file (fp16, as released); its features on the benchmark's posts, for the check."""
    clip, clip_class, config_of = official_classes()
    torch.manual_seed(0)
    model = clip_class(**config_of("ViT-H-14"), **config_of("RoBERTa-wwm-ext-large-chinese")).eval()
    parameters = sum(p.numel() for p in model.parameters())
    path = folder / "clip_cn_vit-h-14.pt"
    torch.save({"state_dict": {f"module.{k}": v.half() for k, v in model.state_dict().items()}}, path)
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    from tests.encoders.test_chinese_clip_official import pixels

    with torch.no_grad():
        expected = {"text": model.encode_text(clip.tokenize(texts(8), context_length=52)).numpy(),
                    "image": model.encode_image(pixels(photos(2))).numpy()}
    return path, {"parameters": parameters, "expected": expected}


def measure(checkpoint: str, precision: str, images: int, count: int) -> dict:
    """In this process: load through sgmft, encode, time (after one warm-up batch)."""
    from sgmft.encoders import create_encoder

    started = time.perf_counter()
    encoder = create_encoder("chinese-clip", checkpoint=checkpoint, precision=precision)
    load = time.perf_counter() - started
    pictures, words = photos(images), texts(count)
    encoder.encode_images(pictures[:1])
    encoder.encode_texts(words[:2])
    started = time.perf_counter()
    image_features = encoder.encode_images(pictures)
    image_s = time.perf_counter() - started
    started = time.perf_counter()
    encoder.encode_texts(words)
    text_s = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    found = {"precision": precision, "threads": torch.get_num_threads(), "load_s": round(load, 1),
             "images_per_s": images / image_s, "texts_per_s": count / text_s, "peak_rss_gib": peak}
    if precision == "fp32":
        found["features"] = {"text": encoder.encode_texts(texts(8)).tolist(),
                             "image": image_features[:2].tolist() if images >= 2 else
                             encoder.encode_images(photos(2)).tolist()}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--measure", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1], args.images, args.texts)))
        return
    from sgmft.device import native_cpu_bf16

    with tempfile.TemporaryDirectory() as tmp:
        path, reference = build(Path(tmp))
        print(f"ViT-H/14 + RoBERTa-wwm-ext-large: {reference['parameters'] / 1e6:.0f} M parameters; "
              f"this CPU {'has' if native_cpu_bf16() else 'has no'} native bf16", flush=True)
        results = []
        for precision in ("fp32", "bf16"):
            done = subprocess.run([sys.executable, __file__, "--images", str(args.images), "--texts",
                                   str(args.texts), "--measure", str(path), precision],
                                  check=True, stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "SGMFT_CACHE": tmp})
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    features = results[0].pop("features")
    error = {kind: float(np.abs(np.asarray(features[kind]) - reference["expected"][kind]).max()
                         / np.abs(reference["expected"][kind]).max()) for kind in ("text", "image")}
    print(f"sgmft against the official code (fp32, relative): text {error['text']:.1e}, "
          f"image {error['image']:.1e}")
    for r in results:
        hours = {n: n / r["images_per_s"] / 3600 + n / r["texts_per_s"] / 3600 for n in (17_000, 1_000_000)}
        r["hours"] = {str(n): round(h, 1) for n, h in hours.items()}
        print(f"{r['precision']} ({r['threads']} thread(s)): images {r['images_per_s']:.2f}/s, "
              f"texts {r['texts_per_s']:.1f}/s, "
              f"peak {r['peak_rss_gib']:.1f} GiB, load {r['load_s']} s; 17,000 posts {hours[17_000]:.1f} h, "
              f"1,000,000 posts {hours[1_000_000]:.0f} h")
    if args.out:
        args.out.write_text(json.dumps({"parameters": reference["parameters"], "relative_error": error,
                                        "native_bf16": native_cpu_bf16(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
