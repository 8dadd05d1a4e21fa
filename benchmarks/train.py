"""Training speed and memory at the paper's scale: seconds per epoch on 17,000 posts.

    python benchmarks/train.py [--posts 17000] [--preset fast] [--variants sg-mft,mplug] [--batches N]

Features are random, of the default encoders' sizes (text 512, image 1280); only the timing
matters. Each variant trains one epoch on the 80 % train part in its own process (so its peak
RSS is its own). The last line estimates `sgmft reproduce` (every table variant, 3 seeds,
the preset's epochs) from the measured epochs. ``--batches N`` times N batches only and scales
up to the epoch (for the slow settings: the paper preset at D = 1024 takes about 20 minutes an
epoch on 2 cores).
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


def one_variant(variant: str, preset: str, posts: int, overrides: list[str], batches: int = 0) -> dict:
    import torch

    from sgmft.models.model import MultimodalModel
    from sgmft.training.config import resolve_config
    from sgmft.training.trainer import fit, predict

    torch.manual_seed(0)
    config = resolve_config(preset, [*overrides, "train.epochs=1"], variant=variant)
    full = int(posts * 0.8)
    n_train = min(full, batches * config.train.batch_size) if batches else full
    data = {"text": torch.randn(n_train, 512), "image": torch.randn(n_train, 1280),
            "tokens": torch.randint(1, 5000, (n_train, config.model.max_tokens)),
            "label": torch.randint(0, 8, (n_train,))}
    model = MultimodalModel(config.model, 512, 1280, 8, vocab_size=5000)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fit(model, data, config.train, Path(tmp), progress=False)
        epoch = (time.perf_counter() - start) * full / n_train
    start = time.perf_counter()
    predict(model, {k: v[: posts - full] for k, v in data.items()})
    evaluate = (time.perf_counter() - start) * (posts - full) / min(n_train, posts - full)
    return {"variant": variant, "epoch_s": round(epoch, 1), "eval_s": round(evaluate, 1),
            "epochs": resolve_config(preset, overrides, variant=variant).train.epochs,
            "batch_size": config.train.batch_size,
            "dim": config.model.dim, "parameters": sum(p.numel() for p in model.parameters()),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    from sgmft.research.reproduce import table_variants

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=17000)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--variants", default=",".join(table_variants()))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="config override, key=value")
    parser.add_argument("--batches", type=int, default=0, help="time this many batches and scale up")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_variant(args.one, args.preset, args.posts, args.set, args.batches)))
        return
    print(f"{args.posts} posts ({int(args.posts * 0.8)} train), preset {args.preset} "
          f"{' '.join(args.set)}, random features 512/1280")
    total = 0.0
    for variant in args.variants.split(","):
        extra = [f"--set={item}" for item in args.set]
        out = subprocess.run([sys.executable, __file__, "--one", variant, "--preset", args.preset,
                              "--posts", str(args.posts), "--batches", str(args.batches), *extra],
                             check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        total += args.seeds * (r["epochs"] * r["epoch_s"] + r["eval_s"])
        print(f"  {variant:16s} {r['epoch_s']:7.1f} s/epoch  eval {r['eval_s']:5.1f} s  "
              f"{r['parameters']:>9,d} params  peak RSS {r['peak_rss_mib']} MiB", flush=True)
    print(f"estimated `sgmft reproduce` training+evaluation, {args.seeds} seeds: {total / 60:.1f} min")


if __name__ == "__main__":
    main()
