"""`sgmft evaluate RUN`: metrics on the run's test split (accuracy with its interval, macro-F1,
per-class scores, calibration, prediction sets, selective prediction, per-group scores and
warnings), confusion matrix, reliability diagram, accuracy-coverage curve and t-SNE of M_fuse.

The test posts are those the run recorded at training time (``split.json``). If the manifest
changed since (a post added, removed or edited), evaluation refuses and names the rows, since
the numbers would no longer describe the trained model's held-out data.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgmft.data.groups import image_groups
from sgmft.evaluation.plots import (
    TSNE_MIN_POSTS,
    plot_confusion,
    plot_reliability,
    plot_selective,
    plot_tsne_panels,
)
from sgmft.evaluation.report import (
    accuracy_interval,
    calibration_report,
    mondrian_report,
    per_group,
    selective,
    set_report,
    warnings_for,
)
from sgmft.evaluation.shift import shift_report
from sgmft.io import atomic_write_json
from sgmft.metrics.calibration import softmax
from sgmft.metrics.classification import classification_metrics
from sgmft.provenance import now, versions
from sgmft.training.data import post_tensors
from sgmft.training.prepare import PreparedData, prepare_data
from sgmft.training.rundir import LoadedRun, load_run
from sgmft.training.trainer import predict

log = logging.getLogger(__name__)


class DataChangedError(ValueError):
    """The manifest is not the one the run was trained on."""


def changed_rows(run: LoadedRun, prepared: PreparedData, shown: int = 10) -> str | None:
    """None when the data is what the run was trained on, else the rows that differ, in words."""
    if prepared.manifest.data_hash() == run.info["data_hash"]:
        return None
    if run.split is None:
        return "the data hash differs from the one recorded at training"
    before = run.split["posts"]
    row_of = prepared.manifest.by_id("row")
    after = prepared.manifest.post_digests()
    parts = []
    for what, ids in (("changed", [i for i in after if i in before and before[i] != after[i]]),
                      ("added", [i for i in after if i not in before]),
                      ("removed", [i for i in before if i not in after])):
        if ids:
            names = ", ".join(f"row {row_of[i]} (id {i!r})" if i in row_of else repr(i)
                              for i in ids[:shown])
            parts.append(f"{len(ids)} {what}: {names}" + (" ..." if len(ids) > shown else ""))
    return "; ".join(parts) or "the data hash differs from the one recorded at training"


def recorded_split(run: LoadedRun, prepared: PreparedData, part: str) -> list[str]:
    """The ids of ``part`` (train, test) the run recorded at training (``split.json``), or the
    current split's for a run without a record."""
    return prepared.split[part] if run.split is None else run.split[part]


def shared_photos(run: LoadedRun, prepared: PreparedData, test: list[str]) -> int:
    """How many test posts share an image group (`sgmft.data.groups`) with a post the final
    model trained on: a split of the user's own can put a photo on both sides."""
    trained = set(run.split.trained() if run.split is not None else recorded_split(run, prepared, "train"))
    wanted = trained | set(test)
    posts = prepared.manifest.posts.having(wanted)
    groups = dict(zip(posts.column("id"), image_groups(posts), strict=True))
    seen = {groups[i] for i in trained if i in groups}
    return sum(groups.get(i) in seen for i in test)


def test_ids(run: LoadedRun, prepared: PreparedData) -> list[str]:
    """The run's recorded test posts that the manifest still holds."""
    present = set(prepared.manifest.ids)
    return [i for i in recorded_split(run, prepared, "test") if i in present]


def test_outputs(run: LoadedRun, prepared: PreparedData,
                 ids: list[str] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Model outputs on the test posts (``ids``, default `test_ids`) and their true classes."""
    ids = test_ids(run, prepared) if ids is None else ids
    if not ids:
        raise ValueError(f"{run.folder}: the run has no test posts to evaluate")
    tensors = post_tensors(prepared.manifest, prepared.cache, ids, run.vocab, run.config.model)
    outputs = predict(run.model, tensors, run.config.train.eval_batch_size)
    return {k: v.numpy() for k, v in outputs.items()}, tensors["label"].numpy()


def _accuracy(logits: np.ndarray, y_true: np.ndarray, labels: list[str]) -> dict[str, float]:
    scores = classification_metrics(y_true, logits.argmax(-1), labels)
    return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}


def _training_majority(run: LoadedRun, prepared: PreparedData) -> int:
    """The most common class of the posts the run trained on."""
    ids = set(recorded_split(run, prepared, "train"))
    index = {label: i for i, label in enumerate(run.labels)}
    counts = Counter(index[label] for post_id, label in prepared.manifest.posts.rows("id", "label")
                     if post_id in ids and label in index)
    return counts.most_common(1)[0][0] if counts else 0


def grouping_column(run: LoadedRun, prepared: PreparedData, group_by: str | None) -> str | None:
    """The column of the per-group table: the one asked for, else the one the run's validation
    grouped by, else the run's ``group_by``; None when no post has a value in it."""
    folds = run.info.get("folds") or {}
    for column in (group_by, folds.get("column"), run.config.data.group_by):
        if column and column in prepared.manifest.columns:
            return column
    return None


def evaluate_run(folder: str | Path, prepared: PreparedData | None = None, figures: bool = True,
                 progress: bool = True, allow_data_change: bool = False, device: str = "cpu",
                 coverage: float = 0.9, group_by: str | None = None,
                 sets_by: str | None = None, novel_unsure: bool = True) -> dict[str, Any]:
    """Write ``eval/metrics.json``, ``eval/confusion.{json,png}``, ``eval/reliability.png``,
    ``eval/selective.png`` and ``eval/tsne.png``; the model runs on ``device`` whatever it was
    trained on. ``coverage``: the prediction sets' target; ``group_by``: the per-group table's
    column (default: the run's validation grouping); ``sets_by``: also group-conditional
    (Mondrian) prediction sets by this column (``label``: per class), with their coverage per
    group."""
    run = load_run(folder, device)
    prepared = prepared or prepare_data(run.config, progress, device)
    if list(prepared.manifest.labels) != run.labels:
        raise ValueError(f"the run was trained on labels {run.labels}, the data has "
                         f"{list(prepared.manifest.labels)}")
    changed = changed_rows(run, prepared)
    if changed and not allow_data_change:
        raise DataChangedError(f"{prepared.manifest.path} is not the data {folder} was trained on "
                               f"({changed}); its test posts may have been trained on. Evaluate on "
                               "the original manifest, or pass --allow-data-change")
    if changed:
        log.warning("evaluating on changed data: %s", changed)
    ids = test_ids(run, prepared)
    outputs, y_true = test_outputs(run, prepared, ids)
    probs = softmax(outputs["logits"])
    logits = torch.from_numpy(outputs["logits"])
    predicted = run.model.decide(logits).numpy()
    metrics = classification_metrics(y_true, predicted, run.labels)
    metrics["accuracy_interval"] = accuracy_interval(int((predicted == y_true).sum()), len(y_true))
    metrics["fused_head"] = _accuracy(outputs["head_logits"], y_true, run.labels)
    if len(run.model.members):
        metrics["refit_alone"] = _refit_alone(run, prepared, ids, y_true)
    for name in ("text", "image"):
        metrics[f"{name}_only"] = _accuracy(outputs[f"probe_{name}"], y_true, run.labels) | {
            "source": "the run's unimodal probe"}
        if f"logits_{name}" in outputs:
            metrics[f"{name}_head"] = _accuracy(outputs[f"logits_{name}"], y_true, run.labels)
    if "gate" in outputs:
        metrics["gate_mean"] = float(outputs["gate"].mean())
    temperature = float(run.model.temperature)
    metrics |= calibration_report(outputs["logits"], y_true, temperature)
    metrics["sets"] = set_report(probs, y_true, run.conformal_threshold(coverage), coverage, predicted)
    curve = selective(probs, y_true, predicted)
    calibration = run.conformal_posts()
    if sets_by is not None and calibration:
        by_id = prepared.manifest.by_id(sets_by)
        values = [by_id.get(i) for i in ids]
        calibration_values = [by_id.get(p["id"]) for p in calibration]
        metrics["sets_by"] = mondrian_report(probs, y_true, predicted, run.labels, values, calibration,
                                             calibration_values, sets_by, coverage)
    metrics["selective"] = {"area": curve["area"]}
    majority = _training_majority(run, prepared)
    metrics["majority_accuracy"] = float((y_true == majority).mean())
    column = grouping_column(run, prepared, group_by)
    values = None
    if column is not None:
        by_id = prepared.manifest.by_id(column)
        values = [by_id[i] for i in ids]
        metrics["groups"] = {"column": column, "table": per_group(values, y_true, predicted, run.labels)}
    tensors = post_tensors(prepared.manifest, prepared.cache, ids, run.vocab, run.config.model)
    shift = shift_report(run, tensors, probs, y_true, predicted, run.model.answer(logits).numpy(), coverage,
                         values, novel_unsure)
    metrics["answered"] = shift.pop("answered")
    if "weighted_sets" in shift:
        metrics["sets"]["weighted"] = shift.pop("weighted_sets")
    metrics |= shift
    if "drift" in metrics:
        log.info("%s", metrics["drift"]["words"])
    metrics["warnings"] = warnings_for(metrics, metrics["majority_accuracy"], len(y_true))
    if (run.conformal or {}).get("shift_like") is False:
        metrics["warnings"].append(
            "the prediction sets' calibration posts could not be held out by the data's groups (images stood "
            "in): on posts of new groups the plain sets may cover less than asked; see the weighted sets")
    shared = shared_photos(run, prepared, ids)
    if shared:
        metrics["warnings"].append(
            f"{shared} of the {len(ids)} test posts share their photo (or a resized, re-encoded or lightly "
            "cropped copy of it) with a post the model trained on: on them the test measures memory, not "
            "what carries over to new photos")
    metrics |= {"variant": run.config.variant, "seed": run.config.train.seed,
                "data_hash": run.info["data_hash"], "data_changed": changed,
                "mixture": run.info.get("mixture", {}) and run.info["mixture"].get("weights"),
                "evaluated": now(), "config": run.config.to_dict(), "versions": versions(),
                "figures_skipped": None}
    out = Path(folder) / "eval"
    if figures:
        _figures(out, run, metrics, outputs, y_true, curve)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "confusion.json", {"labels": run.labels, "matrix": metrics["confusion"]})
    return metrics


def _refit_alone(run: LoadedRun, prepared: PreparedData, ids: list[str],
                 y_true: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 of the run's answers with the refit's fused head alone (the
    ensemble's members left out): what the cross-fit ensemble adds."""
    run.model.use_members = False
    try:
        outputs, _ = test_outputs(run, prepared, ids)
    finally:
        run.model.use_members = True
    decided = run.model.decide(torch.from_numpy(outputs["logits"])).numpy()
    scores = classification_metrics(y_true, decided, run.labels)
    return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
            "fused_head": _accuracy(outputs["head_logits"], y_true, run.labels)["accuracy"]}


def _figures(out: Path, run: LoadedRun, metrics: dict[str, Any], outputs: dict[str, Any],
             y_true: np.ndarray, curve: dict[str, Any]) -> None:
    name = run.config.variant
    plot_confusion(np.asarray(metrics["confusion"]), run.labels, out / "confusion.png",
                   f"{name}: accuracy {metrics['accuracy']:.3f}")
    plot_reliability(metrics["reliability"], out / "reliability.png",
                     f"{name}: ECE {metrics['ece']:.3f} (T = {metrics['temperature']:.2f})")
    plot_selective(curve["coverage"], curve["accuracy"], out / "selective.png",
                   f"{name}: area {curve['area']:.3f}")
    if len(y_true) >= TSNE_MIN_POSTS:
        plot_tsne_panels([(f"{name} M_fuse (test)", outputs["fused"], y_true)], run.labels,
                         out / "tsne.png", seed=run.config.train.seed)
    else:
        metrics["figures_skipped"] = (f"t-SNE needs at least {TSNE_MIN_POSTS} test posts, "
                                      f"the run has {len(y_true)}")
