"""Seeds of one preset under a shift and without one: accuracy, macro-F1, their spread over seeds,
what the decision layer chose, coverage and size of the 90 % sets, and the drift flags.

    python benchmarks/shift_runs.py --data ../shared/data/me16-dev/posts.jsonl --labels fake,real \\
        --column event --hold BostonMarathon --seeds 5 --cache F --out results/X/boston
    python benchmarks/shift_runs.py --data ../shared/data/mvsa-lab5/labels.jsonl \\
        --labels positive,negative,neutral --seeds 5 --cache F --out results/X/mvsa

With ``--column``/``--hold`` the manifest gets a ``split`` column (the held-out value's posts:
test, the rest: train; `leave_one_group_out.write_manifest`); without, the data's own split (the
stratified 80/20 of seed 0). Each seed trains and evaluates in its own process (one thread), so
a run that fails or an older checkout (``--src``) cannot disturb the others. Writes
``results-LABEL.json`` (every seed's record, resumable: finished seeds are kept; one file a label, so
labels can run side by side) and ``summary.md`` (every label found).
Nothing is chosen on the test posts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from leave_one_group_out import write_manifest

#: the metrics kept per seed: (name, path into metrics.json)
KEPT = {
    "accuracy": ("accuracy",),
    "macro_f1": ("macro_f1",),
    "ece": ("ece",),
    "log_loss": ("log_loss",),
    "fused_head": ("fused_head", "accuracy"),
    "text_only": ("text_only", "accuracy"),
    "image_only": ("image_only", "accuracy"),
    "coverage": ("sets", "coverage"),
    "set_size": ("sets", "mean_size"),
    "weighted_coverage": ("sets", "weighted", "coverage"),
    "weighted_set_size": ("sets", "weighted", "mean_size"),
    "flagged": ("novelty", "flagged"),
    "answered": ("answered", "share"),
    "answered_accuracy": ("answered", "accuracy"),
    "drift_text_auc": ("drift", "text", "auc"),
    "drift_image_auc": ("drift", "image", "auc"),
    "refit_alone": ("refit_alone", "accuracy"),
    "refit_alone_macro_f1": ("refit_alone", "macro_f1"),
}


def dig(record: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def record_of(run: Path) -> dict:
    """What one finished and evaluated run folder says (`KEPT`, the majority class, the choices)."""
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    info = json.loads((run / "run.json").read_text())
    choices = ("decisions", "mixture", "calibration", "probes", "decision", "ensemble")
    return {
        **{name: dig(metrics, path) for name, path in KEPT.items()},
        "majority": metrics.get("majority_accuracy"),
        "choices": {key: info.get(key) for key in choices if key in info},
    }


def one_run(
    manifest: Path, labels: str, preset: str, seed: int, out: Path, cache: str | None, extra: list[str]
) -> dict:
    """Train and evaluate one seed in this process."""
    from sgmft.evaluation.evaluate import evaluate_run
    from sgmft.training.config import resolve_config
    from sgmft.training.run import train_run

    overrides = [
        f"data.manifest={manifest}",
        f"data.labels={json.dumps(labels.split(','))}",
        f"train.seed={seed}",
        "data.skip_invalid=true",
        *extra,
    ]
    overrides += [f"data.cache={cache}"] if cache else []
    started = time.perf_counter()
    train_run(resolve_config(preset, overrides), out, progress=False, overwrite=True)
    seconds = time.perf_counter() - started
    evaluate_run(out, figures=False, progress=False, coverage=0.9)
    return {**record_of(out), "seconds": round(seconds, 1)}


def _mean_std(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * spread:.1f}"


def summary(title: str, runs: dict[str, list[dict]]) -> str:
    columns = (
        "accuracy",
        "macro_f1",
        "refit_alone",
        "fused_head",
        "text_only",
        "image_only",
        "ece",
        "coverage",
        "set_size",
        "weighted_coverage",
        "weighted_set_size",
        "flagged",
        "answered",
        "answered_accuracy",
    )
    lines = [
        f"# {title}",
        "",
        "mean ± std over seeds, in % (set sizes in labels x 100)",
        "",
        "| label | seeds | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for label, found in runs.items():
        lines.append(
            f"| {label} | {len(found)} | "
            + " | ".join(_mean_std([r.get(c) for r in found]) for c in columns)
            + " |"
        )
        lines.append(
            f"| {label}, per seed accuracy | | "
            + ", ".join(f"{100 * r['accuracy']:.1f}" for r in found)
            + " |"
            + " |" * (len(columns) - 1)
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--column", default=None)
    parser.add_argument("--hold", default=None)
    parser.add_argument("--preset", default="sgmft")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="key=value, as sgmft --set")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--label", default="after", help="the name of this row (before, after, ...)")
    parser.add_argument("--src", default=None, help="the src/ folder of another checkout to run")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--collect",
        action="store_true",
        help="re-read every finished seed's run folder (after a change to what is kept)",
    )
    args = parser.parse_args()
    if args.one:
        manifest, seed, run = args.one
        print(
            json.dumps(
                one_run(
                    Path(manifest), args.labels, args.preset, int(seed), Path(run), args.cache, args.extra
                )
            )
        )
        return
    manifest = write_manifest(args.data, args.column, args.hold, args.out) if args.column else args.data
    results_file = args.out / f"results-{args.label}.json"  # one file a label: labels may run side by side
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    runs = results.setdefault(args.label, [])
    if args.collect:
        runs[:] = [
            {**run, **record_of(args.out / "runs" / args.label / f"seed{run['seed']}")} for run in runs
        ]
        results_file.write_text(json.dumps(results, indent=1))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    for seed in range(len(runs), args.seeds):
        run = args.out / "runs" / args.label / f"seed{seed}"
        command = [
            sys.executable,
            __file__,
            "--data",
            str(args.data),
            "--labels",
            args.labels,
            "--preset",
            args.preset,
            "--out",
            str(args.out),
            "--one",
            str(manifest),
            str(seed),
            str(run),
        ]
        command += [f"--set={item}" for item in args.extra] + (["--cache", args.cache] if args.cache else [])
        done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        runs.append({"seed": seed, **json.loads(done.stdout.strip().splitlines()[-1])})
        print(args.label, seed, runs[-1]["accuracy"], runs[-1]["macro_f1"], flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(results, indent=1))
    title = f"{args.data}" + (f", {args.column} {args.hold!r} held out" if args.column else "")
    merged = {}
    for path in sorted(args.out.glob("results*.json")):
        merged |= json.loads(path.read_text())
    (args.out / "summary.md").write_text(summary(title, merged), encoding="utf-8")
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
