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

from sgmft.decision.drift import shifted_modalities
from sgmft.decision.earned import Units
from sgmft.evaluation.evaluate import test_outputs
from sgmft.provenance import versions
from sgmft.quantify.estimators import METHODS, choose_method, estimate
from sgmft.quantify.rates import Rates
from sgmft.quantify.shift import margin, widen
from sgmft.training.prepare import calibration_part, prepare_data, validation_folds
from sgmft.training.rundir import load_run


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def run_inputs(folder: Path, image_root: Path | None = None) -> tuple[np.ndarray, np.ndarray, Rates, str]:
    """The test posts' probabilities and labels, and the run's rates with their held-out units
    (with where they came from)."""
    run = load_run(folder)
    if image_root is not None:  # runs trained before image paths were confined to the image root
        run.config.data.image_root = str(image_root)
    prepared = prepare_data(run.config, progress=False)
    outputs, y = test_outputs(run, prepared)
    rates = run.rates()
    if rates is not None and len(rates.labels):
        if rates.units is None:  # out-of-fold rates of a run before rates.json kept their units
            calibration = set(run.split.get("calibration") or [])
            folds = validation_folds(run.config, prepared, calibration)
            rates = with_units(rates, folds.validated, folds.validated_units(), run.split["val"])
        return softmax(outputs["logits"]), y, rates, "rates.json"
    posts = run.conformal_posts()
    if not posts:
        raise SystemExit(f"{folder}: no rates.json and no calibration posts")
    ids = [p["id"] for p in posts]
    held, held_y = test_outputs(run, prepared, ids)
    labels = dict(zip(prepared.manifest.ids, prepared.manifest.label_indices(), strict=True))
    train = np.bincount([labels[i] for i in run.split["train"] if i in labels], minlength=len(run.labels))
    rates = Rates(softmax(held["logits"]), held_y, train / train.sum())
    carved = calibration_part(run.config, prepared)
    if carved is not None:
        rates = with_units(rates, carved.validated, carved.validated_units(), ids)
    return softmax(outputs["logits"]), y, rates, "calibration posts, scored now"


def with_units(rates: Rates, ids: list[str], values: list, held: list[str]) -> Rates:
    """``rates`` with the units of its held-out posts ``held``, found again by the run's own
    grouping (``ids`` and their unit ``values``); unchanged, with a warning, when the grouping
    found now differs from the run's."""
    if list(ids) != list(held):
        print("warning: the held-out posts found now differ from the run's: no units", file=sys.stderr)
        return rates
    unit = Units.of(values, rates.labels, "").unit
    return Rates(rates.probs, rates.labels, rates.train_prior, unit)


def shifted_run(folder: Path) -> bool:
    """Whether the run's evaluation told its test posts from the training posts (drift report)."""
    path = folder / "eval" / "metrics.json"
    return bool(path.is_file() and shifted_modalities(json.loads(path.read_text()).get("drift")))


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


def score(probs: np.ndarray, y: np.ndarray, rates: Rates, grid: np.ndarray, seed: int, shifted: bool) -> dict:
    """Per method (and ``auto``, as `sgmft profile` chooses for a batch flagged ``shifted`` or not):
    MAE and RAE at 100 posts, and the coverage and width of the intervals at 5, 20 and 100 posts,
    as the rates give them and widened by the held-out groups' margin (`sgmft.quantify.shift`)."""
    rng = np.random.default_rng(seed)
    k = probs.shape[1]
    auto = choose_method(len(rates.labels), shifted)[0]
    margins = {m: margin(rates, m, shifted) for m in METHODS}
    out: dict = {m: {"margin": margins[m].value, "units": margins[m].units} for m in METHODS}
    out["auto"] = {"method": auto, "margin": margins[auto].value}
    for size, repeats in ((100, 20), (20, 20), (5, 20)):
        samples = draw(y, grid, size, repeats, rng)
        truth = np.eye(k)[y[samples]].mean(1)  # (S, K) each sample's own shares
        starts = np.arange(0, samples.size, size)
        flat = probs[samples.ravel()]
        for method in METHODS:
            plain = estimate(method, flat, starts, rates)
            record = out[method]
            for suffix, e in (("", plain), ("_margin", widen(plain, margins[method].value))):
                inside = (e.low <= truth + 1e-9) & (truth <= e.high + 1e-9)
                record[f"coverage{suffix}_{size}"] = float(inside.mean())
                record[f"width{suffix}_{size}"] = float((e.high - e.low).mean())
            if size == 100:
                smooth = 1 / (2 * size)
                record["mae"] = float(np.abs(plain.shares - truth).mean())
                record["rae"] = float((np.abs(plain.shares - truth) / (truth + smooth)).mean())
    for key, value in out[auto].items():
        out["auto"].setdefault(key, value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--step", type=float, default=None, help="grid step (default: 0.05 for 2 labels, 0.1 else)"
    )
    parser.add_argument(
        "--image-root", type=Path, default=None, help="the runs' image root (runs before paths were confined)"
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    records = []
    for number, folder in enumerate(args.runs):
        started = time.time()
        probs, y, rates, source = run_inputs(folder, args.image_root)
        grid = prevalence_grid(probs.shape[1], args.step or (0.05 if probs.shape[1] == 2 else 0.1))
        shifted = shifted_run(folder)
        found = score(probs, y, rates, grid, seed=number, shifted=shifted)
        records.append(
            {
                "run": str(folder),
                "test_posts": len(y),
                "held_out_posts": len(rates.labels),
                "held_out_units": None if rates.units is None else int(np.unique(rates.units).size),
                "rates": source,
                "shifted": shifted,
                "grid_points": len(grid),
                "methods": found,
                "seconds": round(time.time() - started, 1),
            }
        )
        print(folder, {m: round(v["mae"], 4) for m, v in found.items()}, file=sys.stderr)
    names = [*METHODS, "auto"]
    mean = {
        m: {
            key: float(np.mean([r["methods"][m][key] for r in records]))
            for key, value in records[0]["methods"][m].items()
            if isinstance(value, float | int)
        }
        for m in names
    }
    spread = {m: float(np.std([r["methods"][m]["mae"] for r in records])) for m in names}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"app-{args.name}.json").write_text(
        json.dumps(
            {
                "protocol": "APP: 20 samples per grid point, 100 posts for MAE/RAE; coverage at 5, 20, 100 "
                "posts, as the rates give the intervals and widened by the held-out groups' margin; auto: "
                "the method sgmft profile chooses, the drift flag from the run's evaluation of its test",
                "mean": mean,
                "mae_sd_over_runs": spread,
                "runs": records,
                "versions": versions(),
            },
            indent=1,
        )
    )
    print(f"| {args.name} | " + " | ".join(f"{m} {mean[m]['mae']:.4f}" for m in names) + " |")

if __name__ == "__main__":
    main()
