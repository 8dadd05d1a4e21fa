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
from sgmft.decision.earned import Units
from sgmft.decision.novelty import MODALITIES, NOVELTY_FILE, fit_novelty
from sgmft.decision.probes import gather
from sgmft.io import atomic_write_json, check_writable, folder_lock, remove_stale_temp_files
from sgmft.metrics.intervals import SMALL_PART, SMALL_PER_LABEL, wilson
from sgmft.models.model import MultimodalModel
from sgmft.training.config import RunConfig
from sgmft.training.crossfit import (
    Training,
    final_config,
    finish_model,
    fit_fold,
    fit_folds,
    oof_logits,
    validation_units,
)
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
    write_rates,
    write_run_info,
)
from sgmft.training.splitfile import write_split
from sgmft.training.trainer import FitResult, Parallel, fit, predict, work_threads
from sgmft.words import plural

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
        with work_threads(len(prepared.split["train"]), device or config.train.device,
                          config.train.threads) as threads:
            log.info("training on %s", plural(threads, "CPU thread") if str(
                device or config.train.device).startswith("cpu") else device or config.train.device)
            return _train(config, out, prepared, resume, progress, on_epoch_end, parallel, device)


def _train(config: RunConfig, out: Path, prepared: PreparedData, resume: bool, progress: bool,
           on_epoch_end, parallel: Parallel, device: str | None) -> Path:
    manifest = prepared.manifest
    carved = calibration_part(config, prepared)
    calibration = carved.validated if carved is not None else []
    folds = validation_folds(config, prepared, set(calibration))
    if needs_validation(config) and parallel.is_main:
        if folds.k >= 2:
            log.info("validation: %s; each of the %d training posts is predicted once, by the model of the "
                     "fold that held it out", folds.how, len(folds.ids))
        else:
            log.info("validation: %s (%d of the %d training posts held out)", folds.how,
                     len(folds.validated), len(folds.ids))
    if calibration and parallel.is_main:
        log.info("calibration: %s, held out from training and every choice, for the prediction sets and "
                 "the novelty flags", carved.how)
    ids, fold = folds.ids, np.asarray(folds.fold)
    words = config.model.text_input != "features"     # a word-level text input (Table 2's baseline)
    vocab = Vocabulary.build(tokens_of(manifest, ids) if words else ())
    if parallel.is_main:
        write_split(out, prepared.split["kind"], ids, folds.fold, calibration, prepared.split["test"],
                    manifest.post_digests())
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
        refit, epochs_record = final_config(config, fold_results,
                                            validation_units(folds, tensors["label"].numpy()))
        if parallel.is_main:
            log.info("refit on all %d training posts for %d epoch(s) (%s)", len(ids), refit.train.epochs,
                     "the folds' median, earned" if epochs_record["earned"] else "the configured epochs")
        model = make_model(tensors)
        result = fit(model, tensors, refit.train, out, None, resume, progress, None, parallel, device)
        if config.model.ensemble:
            model.add_members([member(config, prepared, len(manifest.labels), len(vocab), r.state)
                               for r in fold_results])
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
    oof = after.pop("oof", None)
    if folds.k >= 2:
        after.setdefault("decisions", {})["epochs"] = epochs_record
    after["ensemble"] = {"members": len(model.members), "how": (
        f"the refit and its {len(model.members)} fold models, their fused heads' probabilities averaged"
        if len(model.members) else "the refit alone")}
    held = post_tensors(manifest, prepared.cache, calibration, vocab, config.model) if calibration else None
    scored = conformal_posts(model, config, held, calibration, manifest.labels)
    after["conformal"] = write_conformal_scores(out, scored, None if carved is None else carved.shift_like)
    prior = np.bincount(tensors["label"].numpy(), minlength=len(manifest.labels)) / len(ids)
    units = None if held is None else Units.of(carved.validated_units(), held["label"].numpy(), "").unit
    after["rates"] = write_rates(out, scored, oof, prior, manifest.labels, units)
    after["novelty"] = write_novelty(out, tensors, held, fold if folds.k >= 1 else None, config.train.seed)
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
    info["text_only_posts"] = len(manifest.text_only)
    trained_on = len(ids) - len(folds.validated) if folds.k == 1 else len(ids)
    write_run_info(out, config, prepared, result, trained_on, info, model)
    return out


def member(config: RunConfig, prepared: PreparedData, num_classes: int, vocab_size: int,
           state: dict[str, torch.Tensor]) -> MultimodalModel:
    """A fold model of the cross-fit ensemble, from its saved weights."""
    model = build_model(config, prepared.cache, num_classes, vocab_size)
    model.load_state_dict(state)
    return model.eval()


#: the presence patterns calibration posts are scored in: (name, has text, has image)
PATTERNS = (("both", True, True), ("text_only", True, False), ("image_only", False, True))


def conformal_posts(model: MultimodalModel, config: RunConfig, tensors: dict[str, Any] | None,
                    ids: list[str], labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each calibration post's id, label and conformal scores: 1 - the deployed model's
    probability of its true label (the mixture, the temperature, everything the run answers
    with), as the post is (``score``), and as if it had only its text (``score_text_only``, the
    image replaced by its training mean, as `sgmft predict` does) or only its image; and its
    probabilities as it is (the error rates the adjusted profile shares correct for)."""
    if not ids or tensors is None:
        return []
    y = tensors["label"]
    scores, as_is = {}, None
    for name, has_text, has_image in PATTERNS:
        batch = dict(tensors)
        for modality, has in (("text", has_text), ("image", has_image)):
            if not has:
                batch |= missing_modality(model, modality, len(ids))
        batch["present"] = torch.tensor([[has_text, has_image]], dtype=torch.bool).expand(len(ids), 2)
        probs = torch.softmax(predict(model, batch, config.train.eval_batch_size)["logits"], -1).double()
        scores[name] = (1 - probs[torch.arange(len(ids)), y]).tolist()
        as_is = probs.numpy().round(6).tolist() if name == "both" else as_is
    return [{"id": i, "label": labels[int(label)], "score": round(scores["both"][j], 6),
             "score_text_only": round(scores["text_only"][j], 6),
             "score_image_only": round(scores["image_only"][j], 6), "probabilities": as_is[j]}
            for j, (i, label) in enumerate(zip(ids, y.tolist(), strict=True))]


def missing_modality(model: MultimodalModel, name: str, count: int) -> dict[str, torch.Tensor]:
    """The training-mean features of a missing modality for ``count`` posts: pooled (the probes'
    mean) and, for the sequence reading, token states (the input statistics' mean)."""
    out = {name: getattr(model.probes, f"{name}_mean").detach().cpu().expand(count, -1).clone()}
    if model.config.reading == "sequence":
        mean = getattr(model.inputs, f"{name}_stats").mean.detach().cpu()
        length = getattr(model.inputs, f"{name}_length").map.in_features
        out[f"{name}_tokens"] = mean.expand(count, length, -1).clone()
    return out


def write_novelty(out: Path, tensors: dict[str, Any], held: dict[str, Any] | None, fold: np.ndarray | None,
                  seed: int) -> dict[str, Any]:
    """Fit the run's novelty index (`sgmft.decision.novelty`) on the posts it trained on, calibrated
    on ``held`` (the calibration part's tensors) or else on the validation ``fold``s; write it
    beside the model. Returns what run.json records."""
    def rows(name: str, index: np.ndarray) -> np.ndarray:
        return gather(tensors[name], index).numpy()

    calibration = None if held is None else {name: held[name].float().numpy() if torch.is_tensor(held[name])
                                             else gather(held[name], np.arange(len(held["label"]))).numpy()
                                             for name in MODALITIES}
    index = fit_novelty(rows, len(tensors["label"]), calibration, fold, seed)
    if index is None:
        (out / NOVELTY_FILE).unlink(missing_ok=True)
        return {"how": "none: no posts were held out to calibrate novelty on; no post is flagged"}
    index.save(out / NOVELTY_FILE)
    return {"how": index.how, "alpha": index.alpha, "references": len(index.neighbours["text"])}


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
