"""A training run from a manifest to a run folder, and loading a run folder back.

A run folder holds: ``config.json`` (the resolved RunConfig), ``model.safetensors``,
``labels.json``, ``vocab.json``, ``checkpoint.pt`` (for ``--resume``) and ``run.json`` (history,
timings, split, feature cache, data hash, seed and package versions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from sklearn.model_selection import train_test_split

from sgmft.data.manifest import Manifest, load_manifest
from sgmft.data.splits import load_or_make_split
from sgmft.encoders.cache import FeatureCache
from sgmft.io import atomic_write, atomic_write_json
from sgmft.models.model import MultimodalModel
from sgmft.pipeline import ensure_features
from sgmft.provenance import now, versions
from sgmft.training.config import RunConfig
from sgmft.training.data import Vocabulary, post_tensors
from sgmft.training.trainer import FitResult, fit


@dataclass
class PreparedData:
    """A manifest with its feature cache and split, loaded once and shared by runs."""

    manifest: Manifest
    cache: FeatureCache
    cache_dir: Path
    split: dict[str, Any]


def prepare_data(config: RunConfig, progress: bool = True) -> PreparedData:
    """Load the manifest, extract or reuse its features, and load or make its split."""
    data = config.data
    manifest = load_manifest(data.manifest, data.image_root, data.labels,
                             skip_invalid=data.skip_invalid)
    cache, folder = ensure_features(manifest, data.encoder, data.checkpoint,
                                    Path(data.cache) if data.cache else None,
                                    device=config.train.device, progress=progress,
                                    sequences=config.model.reading == "sequence")
    split = load_or_make_split(manifest, data.split, data.test_fraction, data.split_seed)
    return PreparedData(manifest, cache, folder, split)


def carve_validation(prepared: PreparedData, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A stratified validation part of the train split: (train ids, validation ids)."""
    train_ids = prepared.split["train"]
    labels = {p.id: p.label for p in prepared.manifest.posts}
    fit_ids, val_ids = train_test_split(train_ids, test_size=fraction, random_state=seed,
                                        stratify=[labels[i] for i in train_ids])
    return list(fit_ids), list(val_ids)


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


def train_run(config: RunConfig, out: Path, prepared: PreparedData | None = None,
              resume: bool = False, progress: bool = True, on_epoch_end=None) -> Path:
    """Train one configuration into the run folder ``out``; returns ``out``."""
    out = Path(out)
    saved = out / "config.json"
    same = json.loads(json.dumps(config.to_dict()))
    if resume and saved.is_file() and json.loads(saved.read_text(encoding="utf-8")) != same:
        raise ValueError(f"--resume: {saved} holds another configuration; resume with the same one")
    out.mkdir(parents=True, exist_ok=True)
    config.save(saved)
    prepared = prepared or prepare_data(config, progress)
    manifest = prepared.manifest
    train_ids, val_ids = prepared.split["train"], None
    if config.train.early_stopping:
        train_ids, val_ids = carve_validation(prepared, config.train.val_fraction, config.train.seed)
    vocab = Vocabulary.build([p.tokens for p in manifest.posts if p.id in set(train_ids)])
    vocab.save(out / "vocab.json")
    atomic_write_json(out / "labels.json", list(manifest.labels))
    max_tokens, sequences = config.model.max_tokens, config.model.reading == "sequence"
    train = post_tensors(manifest, prepared.cache, train_ids, vocab, max_tokens, sequences=sequences)
    val = (post_tensors(manifest, prepared.cache, val_ids, vocab, max_tokens, sequences=sequences)
           if val_ids else None)
    model = build_model(config, prepared.cache, len(manifest.labels), len(vocab))
    result = fit(model, train, config.train, out, val, resume, progress, on_epoch_end)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
    _write_run_info(out, config, prepared, result, len(train_ids), len(val_ids or []), model)
    return out


def _write_run_info(out: Path, config: RunConfig, prepared: PreparedData, result: FitResult,
                    n_train: int, n_val: int, model: MultimodalModel) -> None:
    header = prepared.cache.header
    atomic_write_json(out / "run.json", {
        "finished": now(),
        "variant": config.variant,
        "seed": config.train.seed,
        "manifest": str(prepared.manifest.path),
        "data_hash": prepared.manifest.data_hash(),
        "split": {k: prepared.split[k] for k in ("kind", "test_fraction", "seed", "path")}
        | {"train": n_train, "val": n_val, "test": len(prepared.split["test"])},
        "features": {"folder": str(prepared.cache_dir), "encoder": header["encoder"],
                     "content_hash": header["content_hash"], "dims": header["dims"],
                     "shared_space": header.get("shared_space", False),
                     "token_shapes": header.get("token_shapes")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(result.seconds, 2),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
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
