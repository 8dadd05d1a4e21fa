"""The quantification methods under the artificial-prevalence protocol (APP; Forman 2008, as QuaPy's
``APP``): samples of a run's test posts drawn with label shares swept over the simplex, the
population shares of each sample estimated by cc, pcc, acc, pacc and emq from the deployed
model's probabilities and the run's error rates on held-out posts, and

- the mean absolute error (MAE) and relative absolute error (RAE, smoothed by 1 / (2 n)) of the
  estimated shares, over samples of 100 posts;
- the intervals' coverage: how often a sample's own true share of a label lies in its 95 %
  interval, for samples (groups) of 5, 20 and 100 posts.

    python benchmarks/quantify_app.py --runs /work/exp/boston/runs/after/seed* --name boston \\
        --out results/2026-12-07-quantify

Runs trained before runs kept ``rates.json`` are given their rates here as `sgmft train` would:
their calibration posts scored by the deployed model. Nothing is chosen on the test posts: they
are only resampled and scored.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from sgmft.evaluation.evaluate import test_outputs
from sgmft.provenance import versions
from sgmft.quantify.estimators import METHODS, estimate
from sgmft.quantify.rates import Rates
from sgmft.training.prepare import prepare_data
from sgmft.training.rundir import load_run


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def run_inputs(folder: Path) -> tuple[np.ndarray, np.ndarray, Rates, str]:
    """The test posts' probabilities and labels, and the run's rates (with where they came from)."""
    run = load_run(folder)
    prepared = prepare_data(run.config, progress=False)
    outputs, y = test_outputs(run, prepared)
    rates = run.rates()
    if rates is not None:
        return softmax(outputs["logits"]), y, rates, "rates.json"
    posts = run.conformal_posts()
    if not posts:
        raise SystemExit(f"{folder}: no rates.json and no calibration posts")
    held, held_y = test_outputs(run, prepared, [p["id"] for p in posts])
    labels = dict(zip(prepared.manifest.ids, prepared.manifest.label_indices(), strict=True))
    train = np.bincount([labels[i] for i in run.split["train"] if i in labels], minlength=len(run.labels))
    return (
        softmax(outputs["logits"]),
        y,
        Rates(softmax(held["logits"]), held_y, train / train.sum()),
        "calibration posts, scored now",
    )


def prevalence_grid(k: int, step: float) -> np.ndarray:
    """Every share vector on the simplex with entries on a grid of ``step`` (QuaPy's APP grid)."""
    points = np.round(np.arange(0, 1 + 1e-9, step), 6)
    return np.asarray(
        [(*p, round(1 - sum(p), 6)) for p in itertools.product(points, repeat=k - 1) if sum(p) <= 1 + 1e-9]
    )


def draw(y: np.ndarray, shares: np.ndarray, size: int, repeats: int, rng: np.random.Generator) -> np.ndarray:
    """(len(shares) * repeats, size) indices of test posts: each sample's label counts are the
    shares' multinomial draw, its posts drawn with replacement within each label."""
    by_label = [np.flatnonzero(y == c) for c in range(shares.shape[1])]
    samples = []
    for p in shares:
        for _ in range(repeats):
            counts = rng.multinomial(size, p)
            samples.append(np.concatenate([rng.choice(by_label[c], n) for c, n in enumerate(counts) if n]))
    return np.asarray(samples)


def score(probs: np.ndarray, y: np.ndarray, rates: Rates, grid: np.ndarray, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    k = probs.shape[1]
    out: dict = {}
    for size, repeats in ((100, 20), (20, 20), (5, 20)):
        samples = draw(y, grid, size, repeats, rng)
        truth = np.eye(k)[y[samples]].mean(1)  # (S, K) each sample's own shares
        starts = np.arange(0, samples.size, size)
        flat = probs[samples.ravel()]
        for method in METHODS:
            e = estimate(method, flat, starts, rates)
            inside = (e.low <= truth + 1e-9) & (truth <= e.high + 1e-9)
            record = out.setdefault(method, {})
            record[f"coverage_{size}"] = float(inside.mean())
            record[f"width_{size}"] = float((e.high - e.low).mean())
            if size == 100:
                smooth = 1 / (2 * size)
                record["mae"] = float(np.abs(e.shares - truth).mean())
                record["rae"] = float((np.abs(e.shares - truth) / (truth + smooth)).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--step", type=float, default=None, help="grid step (default: 0.05 for 2 labels, 0.1 else)"
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    records = []
    for number, folder in enumerate(args.runs):
        started = time.time()
        probs, y, rates, source = run_inputs(folder)
        grid = prevalence_grid(probs.shape[1], args.step or (0.05 if probs.shape[1] == 2 else 0.1))
        found = score(probs, y, rates, grid, seed=number)
        records.append(
            {
                "run": str(folder),
                "test_posts": len(y),
                "held_out_posts": len(rates.labels),
                "rates": source,
                "grid_points": len(grid),
                "methods": found,
                "seconds": round(time.time() - started, 1),
            }
        )
        print(folder, {m: round(v["mae"], 4) for m, v in found.items()}, file=sys.stderr)
    mean = {
        m: {key: float(np.mean([r["methods"][m][key] for r in records])) for key in records[0]["methods"][m]}
        for m in METHODS
    }
    spread = {m: float(np.std([r["methods"][m]["mae"] for r in records])) for m in METHODS}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"app-{args.name}.json").write_text(
        json.dumps(
            {
                "protocol": "APP: 20 samples per grid point, 100 posts for MAE/RAE; "
                "coverage at 5, 20, 100 posts",
                "mean": mean,
                "mae_sd_over_runs": spread,
                "runs": records,
                "versions": versions(),
            },
            indent=1,
        )
    )
    print(f"| {args.name} | " + " | ".join(f"{m} {mean[m]['mae']:.4f}" for m in METHODS) + " |")


if __name__ == "__main__":
    main()
