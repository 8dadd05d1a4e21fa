"""`sgmft evaluate RUN`: metrics on the run's test split, confusion matrix and t-SNE of M_fuse.

The test posts are those the run recorded at training time (``split.json``). If the manifest
changed since (a post added, removed or edited), evaluation refuses and names the rows, since
the numbers would no longer describe the trained model's held-out data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from sgmft.evaluation.plots import TSNE_MIN_POSTS, plot_confusion, plot_tsne_panels
from sgmft.io import atomic_write_json
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
    split_file = run.folder / "split.json"
    if not split_file.is_file():
        return "the data hash differs from the one recorded at training"
    before = json.loads(split_file.read_text(encoding="utf-8"))["posts"]
    now_posts = {p.id: p for p in prepared.manifest.posts}
    after = prepared.manifest.post_digests()
    parts = []
    for what, ids in (("changed", [i for i in after if i in before and before[i] != after[i]]),
                      ("added", [i for i in after if i not in before]),
                      ("removed", [i for i in before if i not in after])):
        if ids:
            names = ", ".join(f"row {now_posts[i].row} (id {i!r})" if i in now_posts else repr(i)
                              for i in ids[:shown])
            parts.append(f"{len(ids)} {what}: {names}" + (" ..." if len(ids) > shown else ""))
    return "; ".join(parts) or "the data hash differs from the one recorded at training"


def test_ids(run: LoadedRun, prepared: PreparedData) -> list[str]:
    """The run's recorded test posts that the manifest still holds (the current split's for a
    run without a record)."""
    split_file = run.folder / "split.json"
    if not split_file.is_file():
        return prepared.split["test"]
    present = {p.id for p in prepared.manifest.posts}
    return [i for i in json.loads(split_file.read_text(encoding="utf-8"))["test"] if i in present]


def test_outputs(run: LoadedRun, prepared: PreparedData) -> tuple[dict[str, Any], np.ndarray]:
    """Model outputs on the test posts and their true classes."""
    ids = test_ids(run, prepared)
    if not ids:
        raise ValueError(f"{run.folder}: the run has no test posts to evaluate")
    tensors = post_tensors(prepared.manifest, prepared.cache, ids, run.vocab,
                           run.config.model.max_tokens,
                           sequences=run.config.model.reading == "sequence")
    outputs = predict(run.model, tensors, run.config.train.eval_batch_size)
    return {k: v.numpy() for k, v in outputs.items()}, tensors["label"].numpy()


def _accuracy(logits: np.ndarray, y_true: np.ndarray, labels: list[str]) -> dict[str, float]:
    scores = classification_metrics(y_true, logits.argmax(-1), labels)
    return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}


def evaluate_run(folder: str | Path, prepared: PreparedData | None = None, figures: bool = True,
                 progress: bool = True, allow_data_change: bool = False,
                 device: str = "cpu") -> dict[str, Any]:
    """Write ``eval/metrics.json``, ``eval/confusion.{json,png}`` and ``eval/tsne.png``; the
    model runs on ``device`` whatever it was trained on."""
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
    outputs, y_true = test_outputs(run, prepared)
    metrics = classification_metrics(y_true, outputs["logits"].argmax(-1), run.labels)
    metrics["fused_head"] = _accuracy(outputs["head_logits"], y_true, run.labels)
    for name in ("text", "image"):
        metrics[f"{name}_only"] = _accuracy(outputs[f"probe_{name}"], y_true, run.labels) | {
            "source": "the run's unimodal probe"}
        if f"logits_{name}" in outputs:
            metrics[f"{name}_head"] = _accuracy(outputs[f"logits_{name}"], y_true, run.labels)
    if "gate" in outputs:
        metrics["gate_mean"] = float(outputs["gate"].mean())
    metrics |= {"variant": run.config.variant, "seed": run.config.train.seed,
                "data_hash": run.info["data_hash"], "data_changed": changed,
                "mixture": run.info.get("mixture"),
                "evaluated": now(), "config": run.config.to_dict(), "versions": versions(),
                "figures_skipped": None}
    out = Path(folder) / "eval"
    if figures:
        plot_confusion(np.asarray(metrics["confusion"]), run.labels, out / "confusion.png",
                       f"{run.config.variant}: accuracy {metrics['accuracy']:.3f}")
        if len(y_true) >= TSNE_MIN_POSTS:
            plot_tsne_panels([(f"{run.config.variant} M_fuse (test)", outputs["fused"], y_true)],
                             run.labels, out / "tsne.png", seed=run.config.train.seed)
        else:
            metrics["figures_skipped"] = (f"t-SNE needs at least {TSNE_MIN_POSTS} test posts, "
                                          f"the run has {len(y_true)}")
            log.warning("no t-SNE plot: %s", metrics["figures_skipped"])
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "confusion.json", {"labels": run.labels, "matrix": metrics["confusion"]})
    return metrics
