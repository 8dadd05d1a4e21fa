"""`sgmft evaluate RUN`: metrics on the run's test split, confusion matrix and t-SNE of M_fuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sgmft.evaluation.metrics import classification_metrics
from sgmft.evaluation.plots import plot_confusion, plot_tsne_panels
from sgmft.io import atomic_write_json
from sgmft.provenance import now, versions
from sgmft.training.data import post_tensors
from sgmft.training.run import LoadedRun, PreparedData, load_run, prepare_data
from sgmft.training.trainer import predict


def test_outputs(run: LoadedRun, prepared: PreparedData) -> tuple[dict[str, Any], np.ndarray]:
    """Model outputs on the test split and the true classes."""
    ids = prepared.split["test"]
    tensors = post_tensors(prepared.manifest, prepared.cache, ids, run.vocab,
                           run.config.model.max_tokens,
                           sequences=run.config.model.reading == "sequence")
    outputs = predict(run.model, tensors, run.config.train.eval_batch_size, run.config.train.device)
    return {k: v.numpy() for k, v in outputs.items()}, tensors["label"].numpy()


def evaluate_run(folder: str | Path, prepared: PreparedData | None = None, figures: bool = True,
                 progress: bool = True) -> dict[str, Any]:
    """Write ``eval/metrics.json``, ``eval/confusion.{json,png}`` and ``eval/tsne.png``."""
    run = load_run(folder)
    prepared = prepared or prepare_data(run.config, progress)
    if list(prepared.manifest.labels) != run.labels:
        raise ValueError(f"the run was trained on labels {run.labels}, the data has "
                         f"{list(prepared.manifest.labels)}")
    outputs, y_true = test_outputs(run, prepared)
    metrics = classification_metrics(y_true, outputs["logits"].argmax(-1), run.labels)
    for name in ("text", "image"):
        if f"logits_{name}" in outputs:
            unimodal = classification_metrics(y_true, outputs[f"logits_{name}"].argmax(-1), run.labels)
            metrics[f"{name}_only"] = {"accuracy": unimodal["accuracy"], "macro_f1": unimodal["macro_f1"]}
    if "gate" in outputs:
        metrics["gate_mean"] = float(outputs["gate"].mean())
    metrics |= {"variant": run.config.variant, "seed": run.config.train.seed,
                "data_hash": run.info["data_hash"], "evaluated": now(),
                "config": run.config.to_dict(), "versions": versions()}
    out = Path(folder) / "eval"
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "confusion.json", {"labels": run.labels, "matrix": metrics["confusion"]})
    if figures:
        plot_confusion(np.asarray(metrics["confusion"]), run.labels, out / "confusion.png",
                       f"{run.config.variant}: accuracy {metrics['accuracy']:.3f}")
        plot_tsne_panels([(f"{run.config.variant} M_fuse (test)", outputs["fused"], y_true)],
                         run.labels, out / "tsne.png", seed=run.config.train.seed)
    return metrics
