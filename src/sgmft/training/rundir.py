"""The run folder: claiming it for a run, writing what a finished run leaves, and loading it back.

A run folder holds: ``config.json`` (the resolved RunConfig), ``model.safetensors``,
``labels.json``, ``vocab.json``, ``split.json``, ``checkpoint.pt`` (for ``--resume``) and
``run.json`` (history, timings, split, feature cache, data hash, seed and package versions).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from sgmft.io import atomic_write, atomic_write_json
from sgmft.models.model import MultimodalModel
from sgmft.provenance import now, versions
from sgmft.training.checkpoint import CHECKPOINT
from sgmft.training.config import RunConfig
from sgmft.training.data import Vocabulary
from sgmft.training.prepare import PreparedData, token_lengths
from sgmft.training.trainer import FitResult


class RunExistsError(ValueError):
    """The run folder already holds a run, and neither resuming nor overwriting was asked for."""


RUN_FILES = ("model.safetensors", CHECKPOINT, "run.json", "split.json", "vocab.json", "labels.json")


def claim_folder(out: Path, config: RunConfig, resume: bool, overwrite: bool) -> None:
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


def save_model(out: Path, model: MultimodalModel) -> None:
    """The trained weights (probes and mixture included), atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda tmp: save_file(state, str(tmp)))


def write_run_info(out: Path, config: RunConfig, prepared: PreparedData, result: FitResult,
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
