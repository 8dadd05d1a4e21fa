"""`sgmft reproduce`: every row of the paper's Tables 1-4 on one split, N seeds, mean +- std,
written to ``tables.md`` and ``results.json`` with the t-SNE figures 5, 7 and 8.

Every table also gets the recommended preset's row ("SG-MFT (sgmft preset)", its own settings
on the same data and seeds) and the reference rows of `sgmft.research.references`.

Runs are resumable: a (variant, seed) whose run folder already holds evaluated metrics for the
same configuration is not trained again.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from sgmft.data.manifest import skipped_summary
from sgmft.data.splits import describe
from sgmft.evaluation.evaluate import evaluate_run, test_outputs
from sgmft.evaluation.plots import TSNE_MIN_POSTS, plot_tsne_panels
from sgmft.io import atomic_write_bytes, atomic_write_json
from sgmft.models.variants import FIGURES, TABLES, variant_overrides
from sgmft.provenance import now, versions
from sgmft.research.references import reference_scores
from sgmft.training.config import RunConfig
from sgmft.training.prepare import PreparedData, prepare_data
from sgmft.training.run import train_run
from sgmft.training.rundir import load_run

#: accuracy (%) the paper reports for each variant (Tables 1-4).
PAPER_ACCURACY = {
    "mplug": 84.56, "unis-mmc": 86.62, "bridgetower": 86.59, "balance-mla": 85.24,
    "fusion-cnn": 86.25, "sg-mft": 87.29, "baseline": 78.23, "encoder": 84.91,
    "encoder+sfm": 85.74, "encoder+sim": 86.94, "sim+asymmetric": 86.32, "sim+merge": 86.35,
    "sim+coattention": 86.47, "sff-image": 86.88,
}


def table_variants() -> list[str]:
    """Every variant the tables use, each once, in first-use order."""
    return list(dict.fromkeys(v for rows in TABLES.values() for _, v in rows))


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * spread:.2f}"


def _run_one(config: RunConfig, folder: Path, prepared: PreparedData, progress: bool) -> dict[str, Any]:
    metrics_file = folder / "eval" / "metrics.json"
    saved = folder / "config.json"
    if metrics_file.is_file() and saved.is_file() and json.loads(saved.read_text()) == json.loads(
            json.dumps(config.to_dict())):
        return json.loads(metrics_file.read_text())
    train_run(config, folder, prepared, resume=True, progress=progress)
    return evaluate_run(folder, prepared, figures=False)


PRESET_ROW = "SG-MFT ({} preset)"


def _row(label: str, runs: list[dict[str, Any]], paper: str = "—") -> str:
    calibrated = [r["ece"] for r in runs if r.get("ece") is not None]
    ece = _mean_std(calibrated) if len(calibrated) == len(runs) else "—"
    return (f"| {label} | {_mean_std([r['accuracy'] for r in runs])} | "
            f"{_mean_std([r['macro_f1'] for r in runs])} | {ece} | {paper} |")


def render_tables(results: dict[str, list[dict[str, Any]]], header: str, preset: str | None,
                  references: dict[str, dict[str, Any]]) -> str:
    """Every table: the paper's rows, the preset's row, then the reference rows."""
    lines = [header, ""]
    for table, rows in TABLES.items():
        lines += [f"## {table}", "", "| method | accuracy (%) | macro-F1 (%) | ECE (%) "
                  "| paper accuracy (%) |", "|---|---|---|---|---|"]
        lines += [_row(label, results[variant], f"{PAPER_ACCURACY[variant]:.2f}") for label, variant in rows]
        if preset is not None:
            lines.append(_row(f"**{PRESET_ROW.format(preset)}**", results[PRESET_ROW.format(preset)]))
        lines += [_row(f"reference: {name}", [scores]) for name, scores in references.items()]
        lines.append("")
    return "\n".join(lines)


def _header(prepared: PreparedData, seeds: int, base: RunConfig, preset: str | None) -> str:
    manifest = prepared.manifest
    preset_text = (f" The **{PRESET_ROW.format(preset)}** row trains the `{preset}` preset (its own "
                   "settings) on the same data and seeds." if preset else "")
    return (f"# SG-MFT tables reproduced on `{manifest.path}`\n\n"
            f"{len(manifest)} posts, labels {', '.join(manifest.labels)}; split: {describe(prepared.split)}; "
            f"encoder `{prepared.cache.header['encoder']['name']}`; {seeds} seed(s), mean ± std. "
            f"The paper's rows train with the base settings (`{base.train.epochs}` epochs, lr "
            f"{base.train.lr:g}, batch {base.train.batch_size}, D = {base.model.dim}).{preset_text} "
            "Reference rows: no network (single deterministic fits, hence ± 0; no calibrated "
            "probabilities, hence no ECE). ECE: 15 equal-width bins, top label, of the served "
            "(calibrated, where the run was cross-fitted) probabilities. "
            f"Data hash `{manifest.data_hash()[:16]}`. Paper column: the paper's accuracy on its "
            "own (unavailable) Weibo data, for reference only.\n")


def reproduce(base: RunConfig, out: Path, seeds: int = 3, progress: bool = True,
              variants: list[str] | None = None, preset: str | None = "sgmft") -> Path:
    """Train and evaluate every table variant for seeds 0..seeds-1 under ``base`` settings,
    and the ``preset`` (its own settings, the base's data) as one more row."""
    from sgmft.training.config import resolve_config

    started = time.perf_counter()
    chosen = variants or table_variants()
    for variant in chosen:
        variant_overrides(variant)   # unknown names fail before any work
    prepared = prepare_data(base, progress)
    results: dict[str, list[dict[str, Any]]] = {}
    base_dict = base.to_dict()
    configs: list[tuple[str, Path, RunConfig]] = []
    for seed in range(seeds):
        train = {**base_dict["train"], "seed": seed}
        configs += [(variant, out / "runs" / variant / f"seed{seed}", resolve_config(variant=variant, base={
            "data": base_dict["data"], "model": base_dict["model"], "train": train})) for variant in chosen]
        if preset is not None:
            config = resolve_config(preset, [f"train.seed={seed}"], base={"data": base_dict["data"]})
            configs.append((PRESET_ROW.format(preset), out / "runs" / f"preset-{preset}" / f"seed{seed}",
                            config))
    for name, folder, config in configs:
        results.setdefault(name, []).append(_run_one(config, folder, prepared, progress))
    references = reference_scores(prepared)
    _figures(out, prepared, chosen)
    if set(chosen) >= set(table_variants()):
        tables = render_tables(results, _header(prepared, seeds, base, preset), preset, references)
        atomic_write_bytes(out / "tables.md", tables.encode())
    atomic_write_json(out / "results.json", {
        "finished": now(), "seconds": round(time.perf_counter() - started, 1), "seeds": seeds,
        "base_config": base_dict, "preset": preset, "data_hash": prepared.manifest.data_hash(),
        "split": describe(prepared.split), "skipped_rows": skipped_summary(prepared.manifest),
        "versions": versions(),
        "results": {v: [{k: r.get(k) for k in ("accuracy", "macro_f1", "ece", "log_loss", "seed")}
                        for r in runs] for v, runs in results.items()},
        "references": {k: {m: v[m] for m in ("accuracy", "macro_f1")} for k, v in references.items()},
    })
    return out


def _figures(out: Path, prepared: PreparedData, chosen: list[str]) -> None:
    """Figures 5, 7, 8: t-SNE of M_fuse on the test split, seed 0 of each variant (none when
    the test split is too small for t-SNE)."""
    if len(prepared.split["test"]) < TSNE_MIN_POSTS:
        return
    for name, variants in FIGURES.items():
        present = [v for v in variants if v in chosen]
        if not present:
            continue
        panels = []
        for variant in present:
            run = load_run(out / "runs" / variant / "seed0")
            outputs, y_true = test_outputs(run, prepared)
            panels.append((variant, outputs["fused"], y_true))
        plot_tsne_panels(panels, list(prepared.manifest.labels), out / f"{name}.png")
