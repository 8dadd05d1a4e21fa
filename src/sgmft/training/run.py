"""A training run from a manifest to a run folder (`train_run`): prepare the data, claim the
folder, train, fit the probes and the fallback, and write the run (`sgmft.training.rundir`)."""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from sgmft.data.manifest import skipped_summary
from sgmft.io import atomic_write_json, check_writable, folder_lock, remove_stale_temp_files
from sgmft.models.fallback import choose_mixture, fit_unimodal_probes
from sgmft.models.model import MultimodalModel
from sgmft.training.config import RunConfig
from sgmft.training.data import Vocabulary, post_tensors
from sgmft.training.prepare import PreparedData, build_model, needs_validation, prepare_data, validation_part
from sgmft.training.rundir import claim_folder, save_model, write_run_info
from sgmft.training.trainer import FitResult, Parallel, fit, predict

log = logging.getLogger(__name__)


def train_run(config: RunConfig, out: Path, prepared: PreparedData | None = None,
              resume: bool = False, progress: bool = True, on_epoch_end=None,
              overwrite: bool = False, parallel: Parallel | None = None, device: str | None = None) -> Path:
    """Train one configuration into the run folder ``out``; returns ``out``.

    A folder holding a finished run is refused unless ``resume`` (which then finds nothing to
    do and rewrites the results) or ``overwrite``; an unfinished one unless either. Under
    torchrun (``parallel``, see `sgmft.training.distributed`) the main process claims the folder
    and prepares the data before the others start, and it alone writes.
    """
    parallel = parallel or Parallel()
    out = Path(out)
    if not parallel.is_main:
        parallel.barrier()
        prepared = prepared or prepare_data(config, progress=False)
        return _train(config, out, prepared, resume, False, on_epoch_end, parallel, device)
    check_writable(out)
    with folder_lock(out, "sgmft train"):
        remove_stale_temp_files(out)
        claim_folder(out, config, resume, overwrite)
        config.save(out / "config.json")
        prepared = prepared or prepare_data(config, progress)
        parallel.barrier()
        return _train(config, out, prepared, resume, progress, on_epoch_end, parallel, device)


def _train(config: RunConfig, out: Path, prepared: PreparedData, resume: bool, progress: bool,
           on_epoch_end, parallel: Parallel, device: str | None) -> Path:
    manifest = prepared.manifest
    train_ids, val_ids, val_how = validation_part(config, prepared)
    if needs_validation(config) and parallel.is_main:
        log.info("validation: %d of the %d training posts, %s", len(val_ids), len(prepared.split["train"]),
                 val_how)
    wanted = set(train_ids)
    vocab = Vocabulary.build([p.tokens for p in manifest.posts if p.id in wanted])
    if parallel.is_main:
        atomic_write_json(out / "split.json", {
            "kind": prepared.split["kind"], "train": train_ids, "val": val_ids,
            "test": prepared.split["test"], "posts": manifest.post_digests()})
        vocab.save(out / "vocab.json")
        atomic_write_json(out / "labels.json", list(manifest.labels))
    max_tokens, sequences = config.model.max_tokens, config.model.reading == "sequence"
    train = post_tensors(manifest, prepared.cache, train_ids, vocab, max_tokens, sequences=sequences)
    val = (post_tensors(manifest, prepared.cache, val_ids, vocab, max_tokens, sequences=sequences)
           if val_ids else None)
    model = build_model(config, prepared.cache, len(manifest.labels), len(vocab))
    text_key, image_key = model.input_names[:2]
    model.inputs.fit_statistics(train[text_key], train[image_key])
    result = fit(model, train, config.train, out, val, resume, progress, on_epoch_end, parallel, device)
    if not parallel.is_main:
        return out
    after = finish_model(model, config, train, val, prepared.memo)
    save_model(out, model)
    info = {"val": len(val_ids), "val_by": val_how, **after, "processes": parallel.world,
            "warnings": learning_warnings(result, train["label"], val, len(manifest.labels))}
    for warning in info["warnings"]:
        log.warning("%s", warning)
    info["skipped_rows"] = skipped_summary(manifest)
    write_run_info(out, config, prepared, result, len(train_ids), info, model)
    return out


def finish_model(model: MultimodalModel, config: RunConfig, train: dict[str, torch.Tensor],
                 val: dict[str, torch.Tensor] | None, memo: dict | None = None) -> dict[str, Any]:
    """After training: fit the unimodal probes (reused from ``memo`` for the same data), and
    with ``fallback`` choose the mixture on the validation part. Returns what was chosen."""
    model.cpu()
    found: dict[str, Any] = {"probes": fit_unimodal_probes(model, train, val, config.train.seed, memo)}
    if config.model.fallback and val is not None:
        outputs = predict(model, val, config.train.eval_batch_size)
        weights, scores = choose_mixture(outputs["head_logits"].numpy(), outputs["probe_text"].numpy(),
                                         outputs["probe_image"].numpy(), val["label"].numpy())
        model.probes.set_mixture(weights)
        found["mixture"] = {"fused": weights[0], "text": weights[1], "image": weights[2],
                            **{f"val_{k}": round(v, 6) for k, v in scores.items()}}
        log.info("fallback mixture (validation): fused %.1f, text %.1f, image %.1f", *weights)
    return found


def learning_warnings(result: FitResult, labels: torch.Tensor, val: dict[str, torch.Tensor] | None,
                      num_classes: int) -> list[str]:
    """Plain-words warnings for a run that did not learn: a training loss near chance, or a
    validation accuracy no better than always answering the most common class."""
    warnings = []
    if result.history:
        chance = math.log(num_classes)
        final = result.history[-1]["train_loss"]
        if final > 0.9 * chance:
            warnings.append(f"the training loss ended at {final:.3f}, near chance (ln {num_classes} = "
                            f"{chance:.3f}): the model barely learned; try more epochs or a higher "
                            "learning rate (the default preset adapts both)")
    if val is not None and result.best_epoch is not None:
        majority = Counter(labels.tolist()).most_common(1)[0][0]
        baseline = float((val["label"] == majority).float().mean())
        best = result.history[result.best_epoch]["val_accuracy"]
        if best <= baseline:
            warnings.append(f"the best validation accuracy ({best:.3f}) is no better than always "
                            f"answering the most common class ({baseline:.3f})")
    return warnings


