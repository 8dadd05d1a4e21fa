"""The training loop: seeded, checkpointed atomically every epoch, resumable bit for bit.

The batch order of epoch e comes from a generator seeded with (seed, e), and the global RNG
state (dropout) is saved in every checkpoint, so a run resumed after a kill takes exactly the
steps the uninterrupted run would have taken. Checkpoints follow an epoch once
``checkpoint_seconds`` have passed since the last one (tiny epochs would otherwise spend more
time writing than training) and always follow the last epoch.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sgmft.io import atomic_write
from sgmft.models.model import MultimodalModel
from sgmft.training.config import TrainConfig
from sgmft.training.data import batches

CHECKPOINT = "checkpoint.pt"
log = logging.getLogger(__name__)


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    seconds: float = 0.0
    epochs: int = 0          # planned (after `schedule`)
    patience: int = 0


def schedule(config: TrainConfig, n: int) -> tuple[int, int]:
    """(epochs, patience) for ``n`` training posts: the configured ones, both stretched by the
    same factor when they would take fewer than ``min_steps`` optimizer steps in all."""
    steps = -(-n // config.batch_size)
    scale = max(1.0, config.min_steps / max(1, config.epochs * steps))
    if scale > 1:
        log.info("small data (%d step(s) per epoch): up to %d epochs, patience %d, for %d steps",
                 steps, math.ceil(config.epochs * scale), math.ceil(config.early_stopping * scale),
                 config.min_steps)
    return math.ceil(config.epochs * scale), math.ceil(config.early_stopping * scale)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


@torch.no_grad()
def predict(model: MultimodalModel, tensors: dict[str, torch.Tensor], batch_size: int = 512,
            device: str = "cpu") -> dict[str, torch.Tensor]:
    """Eval-mode outputs over all rows: {"logits": (N, C), "head_logits": (N, C), "fused":
    (N, F), "probe_text", "probe_image": (N, C)}, plus a head's own unimodal logits
    ("logits_text", "logits_image") and the gate ("gate", (N, L * w)) where present."""
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    inputs = {k: v for k, v in tensors.items() if k != "label"}
    for batch in batches(inputs, batch_size):
        out = model({k: v.to(device) for k, v in batch.items()})
        found = {"logits": out.logits, "head_logits": out.head_logits, "fused": out.fused}
        found |= {f"logits_{name}": value for name, value in out.unimodal.items()}
        found |= {f"probe_{name}": value for name, value in out.probes.items()}
        if out.gate is not None:
            found["gate"] = out.gate.reshape(len(out.gate), -1)
        for key, value in found.items():
            parts.setdefault(key, []).append(value.float().cpu())
    return {key: torch.cat(values) for key, values in parts.items()}


def accuracy(model: MultimodalModel, tensors: dict[str, torch.Tensor], config: TrainConfig) -> float:
    return validation_scores(model, tensors, config)[0]


def validation_scores(model: MultimodalModel, tensors: dict[str, torch.Tensor],
                      config: TrainConfig) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the model's predictions on labelled ``tensors``."""
    logits = predict(model, tensors, config.eval_batch_size, config.device)["logits"]
    labels = tensors["label"]
    return (float((logits.argmax(-1) == labels).float().mean()),
            float(torch.nn.functional.cross_entropy(logits, labels)))


def make_optimizer(model: MultimodalModel, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the paper's, weight decay as L2 in the gradient) or AdamW (decoupled decay)."""
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> float:
    """Write the checkpoint atomically; returns when it was done (a perf_counter time)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return time.perf_counter()


def fit(model: MultimodalModel, train: dict[str, torch.Tensor], config: TrainConfig,
        run_dir: Path, val: dict[str, torch.Tensor] | None = None, resume: bool = False,
        progress: bool = True,
        on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train ``model`` in place; the weights it ends with are the last epoch's, or the best
    validation epoch's when early stopping is on (best accuracy; ties to the lower loss)."""
    device = torch.device(config.device)
    model.to(device)
    optimizer = make_optimizer(model, config)
    result, start_epoch, best_score, best_state = FitResult(), 0, (-1.0, -float("inf")), None
    path = run_dir / CHECKPOINT
    seed_everything(config.seed)
    if resume and path.is_file():
        state = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        start_epoch, best_state = state["epoch"] + 1, state["best_state"]
        best_score = tuple(state["best_score"])
        result.history, result.best_epoch = state["history"], state["best_epoch"]
        result.seconds = state.get("seconds", 0.0)
    n, waited = len(train["label"]), 0
    result.epochs, result.patience = schedule(config, n)
    if result.best_epoch is not None:
        waited = len(result.history) - 1 - result.best_epoch
    started = time.perf_counter() - result.seconds
    saved_at = time.perf_counter()
    for epoch in range(start_epoch, result.epochs):
        if result.patience and waited >= result.patience:
            result.stopped_early = True
            break
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(batches(train, config.batch_size, epoch_order(n, config.seed, epoch)),
                   total=-(-n // config.batch_size), desc=f"epoch {epoch + 1}/{result.epochs}",
                   disable=not progress, leave=False)
        for batch in bar:
            batch = {k: v.to(device) for k, v in batch.items()}
            output = model(batch)
            loss = model.loss(output, batch["label"], config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach().item() * len(batch["label"])
            seen += len(batch["label"])
            bar.set_postfix(loss=f"{total / seen:.4f}")
        record = {"epoch": epoch, "train_loss": total / seen}
        if val is not None:
            record["val_accuracy"], record["val_loss"] = validation_scores(model, val, config)
            score = (record["val_accuracy"], -record["val_loss"])
            if score > best_score:
                best_score, result.best_epoch, waited = score, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                waited += 1
        result.history.append(record)
        result.seconds = time.perf_counter() - started
        last = epoch == result.epochs - 1 or bool(result.patience and waited >= result.patience)
        if last or time.perf_counter() - saved_at >= config.checkpoint_seconds:
            saved_at = _save_checkpoint(path, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                        "python": random.getstate()},
                "best_score": best_score, "best_state": best_state, "best_epoch": result.best_epoch,
                "history": result.history, "seconds": result.seconds,
            })
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    if config.early_stopping and best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - started
    return result
