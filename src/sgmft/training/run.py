"""A training run from a manifest to a run folder (`train_run`): prepare the data, claim the
folder, make the validation folds, train (cross-fitted, `sgmft.training.crossfit`), fit the
probes, the fallback and the temperature, and write the run (`sgmft.training.rundir`)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgmft.data.manifest import skipped_summary
from sgmft.io import atomic_write_json, check_writable, folder_lock, remove_stale_temp_files
from sgmft.metrics.intervals import SMALL_PART, SMALL_PER_LABEL, wilson
from sgmft.models.model import MultimodalModel
from sgmft.training.config import RunConfig
from sgmft.training.crossfit import Training, final_config, finish_model, fit_fold, fit_folds, oof_logits
from sgmft.training.data import Vocabulary, in_batches, post_tensors, tokens_of
from sgmft.training.prepare import (
    PreparedData,
    build_model,
    calibration_part,
    needs_validation,
    prepare_data,
    validation_folds,
)
from sgmft.training.rundir import (
    claim_folder,
    save_model,
    write_conformal_scores,
    write_examples,
    write_run_info,
)
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
    calibration = calibration_part(config, prepared)
    folds = validation_folds(config, prepared, set(calibration))
    if needs_validation(config) and parallel.is_main:
        log.info("validation: %s (%d of the %d training posts held out)", folds.how, len(folds.validated),
                 len(folds.ids))
    if calibration and parallel.is_main:
        log.info("calibration: %d training posts held out from training and every choice, for the "
                 "prediction sets", len(calibration))
    ids, fold = folds.ids, np.asarray(folds.fold)
    words = config.model.text_input != "features"     # a word-level text input (Table 2's baseline)
    vocab = Vocabulary.build(tokens_of(manifest, ids) if words else ())
    if parallel.is_main:
        atomic_write_json(out / "split.json", {
            "kind": prepared.split["kind"], "train": ids, "val": folds.validated, "folds": folds.fold,
            "calibration": calibration, "test": prepared.split["test"], "posts": manifest.post_digests()})
        vocab.save(out / "vocab.json")
        atomic_write_json(out / "labels.json", list(manifest.labels))
    tensors = post_tensors(manifest, prepared.cache, ids, vocab, config.model)

    def make_model(part: dict[str, torch.Tensor]) -> MultimodalModel:
        model = build_model(config, prepared.cache, len(manifest.labels), len(vocab))
        model.inputs.fit_statistics(*(in_batches(part[key]) for key in model.input_names[:2]))
        return model

    head_oof, fold_results = None, []
    job = Training(config, make_model, tensors, resume, progress, parallel, device)
    if folds.k >= 2:
        fold_results = fit_folds(job, out, folds, on_epoch_end)
        head_oof = oof_logits(folds, fold_results, len(manifest.labels))
        refit = final_config(config, fold_results)
        if parallel.is_main:
            log.info("refit on all %d training posts for %d epoch(s), the folds' median", len(ids),
                     refit.train.epochs)
        model = make_model(tensors)
        result = fit(model, tensors, refit.train, out, None, resume, progress, None, parallel, device)
    elif folds.k == 1:
        result, logits, model = fit_fold(job, out, fold, 0, on_epoch_end)
        head_oof = np.zeros((len(ids), len(manifest.labels)))
        head_oof[fold == 0] = logits.double().numpy()
    else:
        model = make_model(tensors)
        result = fit(model, tensors, config.train, out, None, resume, progress, on_epoch_end, parallel,
                     device)
    if not parallel.is_main:
        return out
    after = finish_model(model, config, tensors, folds, head_oof, prepared.memo)
    scored = conformal_posts(model, config, prepared, vocab, calibration)
    after["conformal"] = write_conformal_scores(out, scored)
    write_examples(out, manifest, ids)
    save_model(out, model)
    did_not_learn = learning_warnings(result, after.get("validation"), len(manifest.labels))
    info = {"folds": folds.record() | {"models": [r.record(k) for k, r in enumerate(fold_results)]},
            "val": len(folds.validated), "val_by": folds.how, **after, "processes": parallel.world,
            "did_not_learn": did_not_learn,
            "warnings": did_not_learn + data_warnings(manifest, tensors["label"].numpy(), fold,
                                                      after.get("validation"), needs_validation(config))}
    for warning in info["warnings"]:
        log.warning("%s", warning)
    info["skipped_rows"] = skipped_summary(manifest)
    trained_on = len(ids) - len(folds.validated) if folds.k == 1 else len(ids)
    write_run_info(out, config, prepared, result, trained_on, info, model)
    return out


def conformal_posts(model: MultimodalModel, config: RunConfig, prepared: PreparedData, vocab: Vocabulary,
                    ids: list[str]) -> list[dict[str, Any]]:
    """Each calibration post's id, label and conformal score: 1 - the deployed model's
    probability of its true label (the mixture, the temperature, everything the run answers
    with)."""
    if not ids:
        return []
    tensors = post_tensors(prepared.manifest, prepared.cache, ids, vocab, config.model)
    probs = torch.softmax(predict(model, tensors, config.train.eval_batch_size)["logits"], -1).double()
    labels = tensors["label"]
    scores = (1 - probs[torch.arange(len(ids)), labels]).tolist()
    return [{"id": i, "label": prepared.manifest.labels[int(y)], "score": round(s, 6)}
            for i, y, s in zip(ids, labels.tolist(), scores, strict=True)]


def data_warnings(manifest, labels: np.ndarray, fold: np.ndarray, validation: dict[str, Any] | None,
                  needed: bool) -> list[str]:
    """Plain words about data too small to mean much: labels without training posts, and (when
    the run chooses on validation) a validation part below `SMALL_PART` posts or
    `SMALL_PER_LABEL` posts of a label, with the 95 % interval of its accuracy."""
    found = []
    counts = np.bincount(labels, minlength=len(manifest.labels))
    empty = [name for name, n in zip(manifest.labels, counts, strict=True) if n == 0]
    if empty:
        found.append(f"label(s) {', '.join(empty)} have no training posts: the model cannot predict "
                     "them, and macro-F1 counts only labels with posts")
    if not needed:
        return found
    held = labels[fold >= 0]
    if validation is None or not len(held):
        found.append(f"too few posts ({len(labels)}) to hold any out for validation: nothing was chosen "
                     "on held-out posts, and the probabilities are not calibrated")
        return found
    per_label = np.bincount(held, minlength=len(manifest.labels))[counts > 0]
    if len(held) < SMALL_PART or per_label.min() < SMALL_PER_LABEL:
        low, high = wilson(round(validation["accuracy"] * len(held)), len(held))
        found.append(f"the validation part holds only {len(held)} post(s) ({per_label.min()} of the rarest "
                     f"label): its accuracy {validation['accuracy']:.1%} could be anywhere in [{low:.1%}, "
                     f"{high:.1%}] (95 %), and the epochs, mixture and temperature chosen on it are rough")
    return found


def learning_warnings(result: FitResult, validation: dict[str, Any] | None, num_classes: int) -> list[str]:
    """Plain-words warnings for a run that did not learn: a training loss near chance, or an
    out-of-fold accuracy no better than always answering the most common class."""
    warnings = []
    if result.history:
        chance = math.log(num_classes)
        final = result.history[-1]["train_loss"]
        if final > 0.9 * chance:
            warnings.append(f"the training loss ended at {final:.3f}, near chance (ln {num_classes} = "
                            f"{chance:.3f}): the model barely learned; try more epochs or a higher "
                            "learning rate (the default preset adapts both)")
    if validation is not None and validation["accuracy"] <= validation["majority_accuracy"]:
        warnings.append(f"the validation accuracy ({validation['accuracy']:.1%}, out of fold) is no "
                        "better than always answering the most common class "
                        f"({validation['majority_accuracy']:.1%})")
    return warnings
