"""Leave one group out: train on every other group, test on the one held out, as when a model
meets posts of a new event. Writes ``results.json`` and ``summary.md`` into ``--out``.

    python benchmarks/leave_one_group_out.py --data ../shared/data/me16-dev/posts.jsonl \\
        --labels fake,real --column event --hold BostonMarathon "Hurricane Sandy" \\
        --seeds 3 --out results/2026-12-02-me16-dev

For each held-out value a manifest with a ``split`` column (that value's posts: test; the rest:
train) is written under ``--out/manifests/``, sharing one feature cache. Each configuration
(``--presets``; ``sgmft@folds=1`` is the sgmft preset with one carved validation part instead
of cross-fitting) trains in its own process, so its wall time and peak memory are its own; the
reference rows (majority class, logistic regressions on the frozen features) are fitted once per
held-out value. Nothing is chosen on the held-out posts.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def write_manifest(data: Path, column: str, held: str, out: Path) -> Path:
    """The manifest with ``split``: test for ``held``'s posts, train for the rest; images absolute."""
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    folder = out / "manifests" / held.replace(" ", "_")
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in rows:
        row = {**row, "image": str((data.parent / row["image"]).resolve()),
               "split": "test" if str(row.get(column)) == held else "train"}
        lines.append(json.dumps(row, ensure_ascii=False))
    path = folder / "posts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def one_run(manifest: Path, labels: str, preset: str, seed: int, out: Path, cache: str | None) -> dict:
    """Train and evaluate one configuration in this process; its metrics, seconds and peak RSS."""
    from sgmft.evaluation.evaluate import evaluate_run
    from sgmft.training.config import resolve_config
    from sgmft.training.run import train_run

    name, _, extra = preset.partition("@")
    overrides = [f"data.manifest={manifest}", f"data.labels={json.dumps(labels.split(','))}",
                 f"train.seed={seed}", "data.skip_invalid=true"]
    overrides += [f"data.cache={cache}"] if cache else []
    overrides += [f"train.{item}" for item in extra.split(",") if item]
    config = resolve_config(name, overrides)
    started = time.perf_counter()
    train_run(config, out, progress=False, overwrite=True)
    seconds = time.perf_counter() - started
    metrics = evaluate_run(out, figures=False, progress=False)
    keys = ("accuracy", "macro_f1", "n", "log_loss", "ece", "brier", "uncalibrated")
    return {**{k: metrics.get(k) for k in keys}, "seconds": round(seconds, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "text_only": metrics["text_only"]["accuracy"], "image_only": metrics["image_only"]["accuracy"],
            "fused_head": metrics["fused_head"]["accuracy"],
            "mixture": (json.loads((out / "run.json").read_text()).get("mixture") or {}).get("weights")}


def references(manifest: Path, labels: str, cache: str | None) -> dict:
    from sgmft.research.references import reference_scores
    from sgmft.training.config import resolve_config
    from sgmft.training.prepare import prepare_data

    overrides = [f"data.manifest={manifest}", f"data.labels={json.dumps(labels.split(','))}",
                 "data.skip_invalid=true"] + ([f"data.cache={cache}"] if cache else [])
    prepared = prepare_data(resolve_config("fast", overrides), progress=False)
    return {name: {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"]}
            for name, s in reference_scores(prepared).items()}


def _mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * spread:.1f}"


def summary(results: dict, args) -> str:
    lines = [f"# Leave one {args.column} out: `{args.data}`", "",
             f"Labels {args.labels}; {args.seeds} seed(s), mean ± std; reference rows are single fits.", ""]
    for held, found in results.items():
        lines += [f"## {held} held out ({found['n']} posts)", "",
                  "| configuration | accuracy (%) | macro-F1 (%) | ECE (%) | log-loss | minutes "
                  "| peak RSS (MiB) |", "|---|---|---|---|---|---|---|"]
        for preset, runs in found["runs"].items():
            def values(key, runs=runs):
                return [r[key] for r in runs if r.get(key) is not None]

            loss = values("log_loss")
            mean_loss = statistics.fmean(loss) if loss else float("nan")
            lines.append(f"| {preset} | {_mean_std(values('accuracy'))} | {_mean_std(values('macro_f1'))} | "
                         f"{_mean_std(values('ece'))} | {mean_loss:.3f} | "
                         f"{statistics.fmean(values('seconds')) / 60:.1f} | {max(values('peak_rss_mib'))} |")
        for name, scores in found["references"].items():
            lines.append(f"| reference: {name} | {100 * scores['accuracy']:.1f} | "
                         f"{100 * scores['macro_f1']:.1f} | — | — | — | — |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--column", default="event")
    parser.add_argument("--hold", nargs="+", required=True)
    parser.add_argument("--presets", default="sgmft,sgmft@folds=1,paper,fast")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache", default=None, help="the feature cache of --data (default: its own)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--one", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        manifest, preset, seed, run = args.one
        print(json.dumps(one_run(Path(manifest), args.labels, preset, int(seed), Path(run), args.cache)))
        return
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for held in args.hold:
        manifest = write_manifest(args.data, args.column, held, args.out)
        found = results.setdefault(held, {"runs": {}})
        found["n"] = sum(json.loads(line).get("split") == "test"
                         for line in manifest.read_text().splitlines())
        if "references" not in found:
            found["references"] = references(manifest, args.labels, args.cache)
        for preset in args.presets.split(","):
            runs = found["runs"].setdefault(preset, [])
            for seed in range(len(runs), args.seeds):
                name = preset.replace("@", "-").replace("=", "")
                run = args.out / "runs" / held.replace(" ", "_") / name / f"seed{seed}"
                command = [sys.executable, __file__, "--data", str(args.data), "--labels", args.labels,
                           "--hold", held, "--out", str(args.out), "--one", str(manifest), preset, str(seed),
                           str(run)] + (["--cache", args.cache] if args.cache else [])
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                runs.append({"seed": seed, **json.loads(done.stdout.strip().splitlines()[-1])})
                print(held, preset, seed, runs[-1]["accuracy"], flush=True)
                results_file.parent.mkdir(parents=True, exist_ok=True)
                results_file.write_text(json.dumps(results, indent=1))
    (args.out / "summary.md").write_text(summary(results, args), encoding="utf-8")
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
