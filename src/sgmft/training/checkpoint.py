"""Checkpoints of a training run: written atomically, read back onto any device.

A checkpoint holds the weights, the optimizer and gradient-scaler states, every process's random
state (Python, NumPy, torch, CUDA), the history and the best epoch so far, so that a run resumed
after a kill takes exactly the steps the uninterrupted run would have taken. It is always read
onto the CPU first: random states must stay CPU tensors (``torch.set_rng_state`` takes nothing
else), and ``load_state_dict`` copies weights and optimizer state to wherever the model lives.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgmft.io import atomic_write

CHECKPOINT = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """This process's random states (CUDA's too where there is a GPU)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _cpu_bytes(state: Any) -> torch.Tensor:
    """A saved random state as the CPU uint8 tensor the setters take (whatever device or dtype
    a loader mapped it to)."""
    return torch.as_tensor(state).to("cpu", torch.uint8)


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state` (CUDA's only where there is a GPU)."""
    torch.set_rng_state(_cpu_bytes(state["torch"]))
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_cpu_bytes(s) for s in state["cuda"]])


@dataclass
class TrainingState:
    """What a checkpoint restores besides the weights and the optimizer."""

    start_epoch: int = 0
    best_score: tuple[float, float] = (-1.0, -float("inf"))
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] | None = None
    best_epoch: int | None = None
    seconds: float = 0.0


def save_checkpoint(path: Path, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, rngs: list[dict[str, Any]], state: TrainingState) -> None:
    """Write the checkpoint of the end of ``epoch`` atomically."""
    record = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
              "scaler": scaler.state_dict(), "rng": rngs, "best_score": state.best_score,
              "best_state": state.best_state, "best_epoch": state.best_epoch,
              "history": state.history, "seconds": state.seconds}
    atomic_write(path, lambda tmp: torch.save(record, tmp))


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, rank: int = 0, world: int = 1) -> TrainingState:
    """Restore a checkpoint into ``model``, ``optimizer`` and ``scaler`` (on whatever device
    they are) and this process's random state; returns the rest. A checkpoint written by
    another number of processes is refused (each process's random state is in it)."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    rngs = saved["rng"] if isinstance(saved["rng"], list) else [saved["rng"]]
    if len(rngs) != world:
        raise ValueError(f"the checkpoint was written by {len(rngs)} process(es); resume with as many "
                         f"(this run has {world})")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scaler.load_state_dict(saved.get("scaler", {}))
    set_rng_state(rngs[rank])
    return TrainingState(saved["epoch"] + 1, tuple(saved["best_score"]), saved["best_state"],
                         saved["history"], saved["best_epoch"], saved.get("seconds", 0.0))
