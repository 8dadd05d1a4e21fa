"""A training run from a manifest to a run folder, and loading a run folder back.

A run folder holds: ``config.json`` (the resolved RunConfig), ``model.safetensors``,
``labels.json``, ``vocab.json``, ``checkpoint.pt`` (for ``--resume``) and ``run.json`` (history,
timings, split, feature cache, data hash, seed and package versions).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sgmft.data.manifest import Manifest, load_manifest, report_skipped, skipped_summary
from sgmft.data.splits import carve_validation, load_or_make_split
from sgmft.encoders.cache import FeatureCache
from sgmft.io import atomic_write, atomic_write_json, check_writable, folder_lock, remove_stale_temp_files
from sgmft.models.model import MultimodalModel
from sgmft.pipeline import ensure_features
from sgmft.provenance import now, versions
from sgmft.training.config import RunConfig
from sgmft.training.data import Vocabulary, post_tensors
from sgmft.training.probes import choose_mixture, fit_unimodal_probes
from sgmft.training.trainer import CHECKPOINT, FitResult, Parallel, fit, predict

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """A manifest with its feature cache and split, loaded once and shared by runs."""

    manifest: Manifest
    cache: FeatureCache
    cache_dir: Path
    split: dict[str, Any]
    memo: dict[Any, Any] = field(default_factory=dict)   # fitted probes, shared by runs


def prepare_data(config: RunConfig, progress: bool = True, device: str | None = None) -> PreparedData:
    """Load the manifest, extract (on ``device``, default the run's) or reuse its features,
    and load or make its split."""
    data = config.data
    manifest = load_manifest(data.manifest, data.image_root, data.labels,
                             skip_invalid=data.skip_invalid)
    report_skipped(manifest)
    cache, folder = ensure_features(manifest, data.encoder, data.checkpoint,
                                    Path(data.cache) if data.cache else None,
                                    device=device or config.train.device, progress=progress,
                                    sequences=config.model.reading == "sequence")
    split = load_or_make_split(manifest, data.split, data.test_fraction, data.split_seed)
    return PreparedData(manifest, cache, folder, split)


def needs_validation(config: RunConfig) -> bool:
    """Early stopping and the fallback mixture choose on a validation part."""
    return bool(config.train.early_stopping) or config.model.fallback


def validation_part(config: RunConfig, prepared: PreparedData) -> tuple[list[str], list[str], str]:
    """(training ids, validation ids, how they were chosen): the manifest's own ``val`` rows
    when it has them, else a part carved from the train split by group (`carve_validation`)."""
    train_ids = prepared.split["train"]
    if not needs_validation(config):
        return train_ids, [], "none"
    if prepared.split.get("val"):
        return train_ids, prepared.split["val"], "the manifest's val rows"
    wanted = set(train_ids)
    posts = [p for p in prepared.manifest.posts if p.id in wanted]
    return carve_validation(posts, config.train.val_fraction, config.train.seed, config.train.val_by)


def token_lengths(features: dict[str, Any]) -> tuple[int, int] | None:
    """(L_text, L_image) of a cache header or a run's feature record, when it has sequences."""
    shapes = features.get("token_shapes")
    return (shapes["text"][0], shapes["image"][0]) if shapes else None


def build_model(config: RunConfig, cache: FeatureCache, num_classes: int,
                vocab_size: int) -> MultimodalModel:
    dims = cache.header["dims"]
    torch.manual_seed(config.train.seed)
    return MultimodalModel(config.model, dims["text"], dims["image"], num_classes, vocab_size,
                           cache.header.get("shared_space", False), token_lengths(cache.header))


class RunExistsError(ValueError):
    """The run folder already holds a run, and neither resuming nor overwriting was asked for."""


RUN_FILES = ("model.safetensors", CHECKPOINT, "run.json", "split.json", "vocab.json", "labels.json")


def _claim_folder(out: Path, config: RunConfig, resume: bool, overwrite: bool) -> None:
    """Check that ``out`` may receive this run; with ``overwrite`` clear the old one."""
    saved = out / "config.json"
    same = json.loads(json.dumps(config.to_dict()))
    if resume and saved.is_file() and json.loads(saved.read_text(encoding="utf-8")) != same:
        raise ValueError(f"--resume: {saved} holds another configuration; resume with the same one")
    finished, started = (out / "model.safetensors").is_file(), (out / CHECKPOINT).is_file()
    if overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "eval", ignore_errors=True)
    elif finished and not resume:
        raise RunExistsError(f"{out} holds a finished run: pass --overwrite to replace it, or "
                             "choose another --out")
    elif started and not resume:
        raise RunExistsError(f"{out} holds an unfinished run: pass --resume to continue it, or "
                             "--overwrite to start again")


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
        _claim_folder(out, config, resume, overwrite)
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
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
    info = {"val": len(val_ids), "val_by": val_how, **after, "processes": parallel.world,
            "warnings": learning_warnings(result, train["label"], val, len(manifest.labels))}
    for warning in info["warnings"]:
        log.warning("%s", warning)
    info["skipped_rows"] = skipped_summary(manifest)
    _write_run_info(out, config, prepared, result, len(train_ids), info, model)
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


def _write_run_info(out: Path, config: RunConfig, prepared: PreparedData, result: FitResult,
                    n_train: int, info: dict[str, Any], model: MultimodalModel) -> None:
    header = prepared.cache.header
    atomic_write_json(out / "run.json", {
        "finished": now(),
        "variant": config.variant,
        "seed": config.train.seed,
        "manifest": str(prepared.manifest.path),
        "data_hash": prepared.manifest.data_hash(),
        "split": {k: prepared.split[k] for k in ("kind", "test_fraction", "seed", "path")}
        | {"train": n_train, "val": info["val"], "val_by": info["val_by"],
           "test": len(prepared.split["test"])},
        "features": {"folder": str(prepared.cache_dir), "encoder": header["encoder"],
                     "content_hash": header["content_hash"], "dims": header["dims"],
                     "shared_space": header.get("shared_space", False),
                     "token_shapes": header.get("token_shapes")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(result.seconds, 2),
        "best_epoch": result.best_epoch,
        "planned_epochs": result.epochs,
        "patience": result.patience,
        "stopped_early": result.stopped_early,
        "skipped_rows": info["skipped_rows"],
        "processes": info["processes"],
        "probes": info["probes"],
        "mixture": info.get("mixture"),
        "warnings": info["warnings"],
        "history": result.history,
        "versions": versions(),
    })


@dataclass
class LoadedRun:
    folder: Path
    config: RunConfig
    model: MultimodalModel
    labels: list[str]
    vocab: Vocabulary
    info: dict[str, Any]


def load_run(folder: str | Path, device: str = "cpu") -> LoadedRun:
    """A finished run folder -> its config, model (eval mode), labels and vocabulary."""
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder} is not a finished run (no model.safetensors)")
    config = RunConfig.from_dict(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    vocab = Vocabulary.load(folder / "vocab.json")
    info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    dims = info["features"]["dims"]
    model = MultimodalModel(config.model, dims["text"], dims["image"], len(labels), len(vocab),
                            info["features"]["shared_space"], token_lengths(info["features"]))
    try:
        model.load_state_dict(load_file(folder / "model.safetensors"))
    except RuntimeError as exc:
        raise ValueError(f"{folder}: the saved weights do not fit the model its config.json "
                         f"describes (written by another sgmft version?): {exc}") from None
    return LoadedRun(folder, config, model.to(device).eval(), labels, vocab, info)
