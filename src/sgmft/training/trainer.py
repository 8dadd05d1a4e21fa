"""The training loop: seeded, checkpointed atomically, resumable bit for bit.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sgmft.device import resolve_precision
from sgmft.encoders.chunks import open_budget
from sgmft.models.model import MultimodalModel
from sgmft.progress import on_terminal, progress_bar
from sgmft.training.checkpoint import CHECKPOINT, TrainingState, load_checkpoint, rng_state, save_checkpoint
from sgmft.training.config import TrainConfig
from sgmft.training.data import batches, chunks_of
from sgmft.words import plural

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
    same factor when they would take fewer than ``min_steps`` optimizer steps in all, to at
    most ``max_epochs`` epochs (so that a few dozen posts are not passed over hundreds of times)."""
    steps = -(-n // config.batch_size)
    scale = max(1.0, config.min_steps / max(1, config.epochs * steps))
    scale = max(1.0, min(scale, config.max_epochs / max(1, config.epochs)))
    if scale > 1:
        log.info("%s per epoch: up to %d epochs, patience %d, to take at least %s",
                 plural(steps, "step"), math.ceil(config.epochs * scale),
                 math.ceil(config.early_stopping * scale),
                 plural(min(config.min_steps, math.ceil(config.epochs * scale) * steps), "step"))
    return math.ceil(config.epochs * scale), math.ceil(config.early_stopping * scale)


#: training sets below this many posts train on one CPU thread when ``train.threads`` is 0: a
#: step's matrices are too small to share out, and idle threads spin on every step under load
ONE_THREAD_POSTS = 20_000


@contextmanager
def work_threads(posts: int, device: str, threads: int = 0) -> Iterator[int]:
    """Torch's CPU threads while training ``posts`` posts: ``threads`` when set, else one below
    `ONE_THREAD_POSTS` on a CPU, else torch's own count; restored afterwards. Yields the count."""
    before = torch.get_num_threads()
    wanted = threads or (1 if posts < ONE_THREAD_POSTS and str(device).startswith("cpu") else before)
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


#: the chunks whose rows a chunk-aware epoch shuffles together (`chunked_order`)
SHUFFLE_CHUNKS = 16


def epoch_order(n: int, seed: int, epoch: int, chunks: np.ndarray | None = None) -> torch.Tensor:
    """(n,) the rows of epoch ``epoch`` in training order: a permutation drawn from (seed,
    epoch); `chunked_order` instead when the rows come from more cache chunks (``chunks`` (n,),
    each row's) than can stay mapped at once (`sgmft.encoders.chunks.open_budget`)."""
    if chunks is not None and len(np.unique(chunks)) > open_budget():
        return chunked_order(chunks, seed, epoch)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


def chunked_order(chunks: np.ndarray, seed: int, epoch: int, window: int = SHUFFLE_CHUNKS) -> torch.Tensor:
    """A permutation that reads the cache a few chunks at a time: the chunks in a random order,
    and the rows of each run of ``window`` consecutive chunks of that order shuffled together
    (a shuffle buffer of ``window`` chunks, as WebDataset's or tf.data's). Each row is drawn
    once per epoch, as in a full shuffle; a batch mixes the rows of ``window`` random chunks
    rather than of the whole set, so rows written next to each other (a manifest sorted by user
    or label) share batches more often than a full shuffle would make them."""
    rng = np.random.default_rng([seed, epoch])
    present = np.unique(chunks)
    rank = np.empty(int(present.max()) + 1, np.int64)
    rank[present] = rng.permutation(len(present))
    key = (rank[chunks] // window) + rng.random(len(chunks))
    return torch.from_numpy(np.argsort(key, kind="stable"))


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's parameters (or, without any, its buffers) live."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: MultimodalModel, tensors: dict[str, torch.Tensor], batch_size: int = 512,
            device: str | None = None) -> dict[str, torch.Tensor]:
    """Eval-mode outputs over all rows: {"logits": (N, C), "head_logits": (N, C), "fused":
    (N, F), "probe_text", "probe_image": (N, C)}, plus a head's own unimodal logits
    ("logits_text", "logits_image") and the gate ("gate", (N, L * w)) where present. Inputs go
    to the model's own device (``device`` is only a check); outputs come back on the CPU."""
    model.eval()
    where = model_device(model)
    if device is not None and torch.device(device).type != where.type:
        raise ValueError(f"the model is on {where}, not on {device}")
    parts: dict[str, list[torch.Tensor]] = {}
    inputs = {k: v for k, v in tensors.items() if k != "label"}
    for batch in batches(inputs, batch_size):
        out = model({k: v.to(where) for k, v in batch.items()})
        found = {"logits": out.logits, "head_logits": out.head_logits, "fused": out.fused}
        found |= {f"logits_{name}": value for name, value in out.unimodal.items()}
        found |= {f"probe_{name}": value for name, value in out.probes.items()}
        if out.gate is not None:
            found["gate"] = out.gate.reshape(len(out.gate), -1)
        for key, value in found.items():
            parts.setdefault(key, []).append(value.float().cpu())
    return {key: torch.cat(values) for key, values in parts.items()}


class Parallel:
    """How a training run is spread over processes; this default is one process, and
    `sgmft.training.distributed.DistributedParallel` the torchrun one."""

    rank, world = 0, 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def order(self, n: int, seed: int, epoch: int, chunks: np.ndarray | None = None) -> torch.Tensor:
        """This process's training rows for an epoch, in order (``chunks``: `epoch_order`)."""
        return epoch_order(n, seed, epoch, chunks)

    def wrap(self, model: MultimodalModel) -> torch.nn.Module:
        """The module to call for training forward passes."""
        return model

    def shard(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This process's share of an evaluation set."""
        return tensors

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over processes."""
        return values

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any (one collective decision)."""
        return self.sum([float(flag)])[0] > 0

    def rng_states(self) -> list[dict[str, Any]]:
        """Every process's random state (gathered on the main one)."""
        return [rng_state()]

    def barrier(self) -> None:
        pass


def accuracy(model: MultimodalModel, tensors: dict[str, torch.Tensor], config: TrainConfig) -> float:
    return validation_scores(model, tensors, config)[0]


def validation_scores(model: MultimodalModel, tensors: dict[str, torch.Tensor], config: TrainConfig,
                      parallel: Parallel | None = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the model's predictions on labelled ``tensors``, each
    process predicting its share and the counts summed over processes."""
    parallel = parallel or Parallel()
    part = parallel.shard(tensors)
    labels = part["label"]
    right, loss = 0.0, 0.0
    if len(labels):   # a process's share is empty when there are fewer posts than processes
        logits = predict(model, part, config.eval_batch_size)["logits"]
        loss = float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
        right = float((logits.argmax(-1) == labels).sum())
    right, loss, count = parallel.sum([right, loss, float(len(labels))])
    return right / count, loss / count


def make_optimizer(model: MultimodalModel, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the paper's, weight decay as L2 in the gradient), AdamW (decoupled decay) or SGD
    with momentum betas[0] (whose step is linear in the gradient: what exactness tests of
    distributed training compare, as Adam's first step, g / |g|, magnifies rounding in tiny
    gradients)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.betas[0],
                               weight_decay=config.weight_decay)
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def fit(model: MultimodalModel, train: dict[str, torch.Tensor], config: TrainConfig,
        run_dir: Path, val: dict[str, torch.Tensor] | None = None, resume: bool = False,
        progress: bool = True,
        on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
        parallel: Parallel | None = None, device: str | None = None) -> FitResult:
    """Train ``model`` in place; the weights it ends with are the last epoch's, or the best
    validation epoch's when early stopping is on (best accuracy; ties to the lower loss).

    parallel: one process (default) or the torchrun processes, each training on its share of
    every batch (``batch_size`` is the global batch). device: overrides ``config.device`` (a
    process's own GPU under torchrun). precision: autocast in bf16 or fp16 (with a gradient
    scaler) where ``config.precision`` asks.
    """
    parallel = parallel or Parallel()
    if config.batch_size % parallel.world:
        raise ValueError(f"train.batch_size {config.batch_size} does not split evenly over "
                         f"{parallel.world} processes")
    device_ = torch.device(device or config.device)
    model.to(device_)
    net = parallel.wrap(model)
    optimizer = make_optimizer(model, config)
    dtype = AUTOCAST[resolve_precision(config.precision, device_.type)]
    scaler = torch.amp.GradScaler(device_.type, enabled=dtype is torch.float16)
    path = run_dir / CHECKPOINT
    seed_everything(config.seed + parallel.rank)
    state = (load_checkpoint(path, model, optimizer, scaler, parallel.rank, parallel.world)
             if resume and path.is_file() else TrainingState())
    result = FitResult(history=state.history or [], best_epoch=state.best_epoch, seconds=state.seconds)
    n, waited = len(train["label"]), 0
    chunks = chunks_of(train)
    result.epochs, result.patience = schedule(config, n)
    if result.best_epoch is not None:
        waited = len(result.history) - 1 - result.best_epoch
    started = time.perf_counter() - result.seconds
    saved_at = time.perf_counter()
    local_batch = config.batch_size // parallel.world
    show = progress and parallel.is_main
    epochs_bar = progress_bar(result.epochs, "train", "epochs", disable=not show, initial=state.start_epoch)
    for epoch in range(state.start_epoch, result.epochs):
        if result.patience and waited >= result.patience:
            result.stopped_early = True
            break
        net.train()
        order = parallel.order(n, config.seed, epoch, chunks)
        total, seen = 0.0, 0
        bar = tqdm(batches(train, local_batch, order), total=-(-len(order) // local_batch),
                   desc=f"epoch {epoch + 1}/{result.epochs}", disable=not show or not on_terminal(),
                   leave=False)
        for batch in bar:
            batch = {k: v.to(device_) for k, v in batch.items()}
            with torch.autocast(device_.type, dtype=dtype, enabled=dtype is not None):
                loss = model.loss(net(batch), batch["label"], config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.detach().item() * len(batch["label"])
            seen += len(batch["label"])
            bar.set_postfix(loss=f"{total / seen:.4f}")
        total, seen = parallel.sum([total, float(seen)])
        record = {"epoch": epoch, "train_loss": total / seen}
        if val is not None:
            record["val_accuracy"], record["val_loss"] = validation_scores(model, val, config, parallel)
            score = (record["val_accuracy"], -record["val_loss"])
            if score > state.best_score:
                state.best_score, result.best_epoch, waited = score, epoch, 0
                state.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                waited += 1
        result.history.append(record)
        epochs_bar.set_postfix(**{k: f"{v:.4f}" for k, v in record.items() if k != "epoch"})
        epochs_bar.update()
        result.seconds = time.perf_counter() - started
        last = epoch == result.epochs - 1 or bool(result.patience and waited >= result.patience)
        # one decision for every process: each rank's clock differs, and saving is collective
        due = parallel.any(time.perf_counter() - saved_at >= config.checkpoint_seconds)
        if last or due:
            rngs = parallel.rng_states()
            if parallel.is_main:
                state.history, state.best_epoch, state.seconds = result.history, result.best_epoch, \
                    result.seconds
                save_checkpoint(path, epoch, model, optimizer, scaler, rngs, state)
            parallel.barrier()
            saved_at = time.perf_counter()
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    epochs_bar.close()
    if config.early_stopping and state.best_state is not None:
        model.load_state_dict(state.best_state)
    result.seconds = time.perf_counter() - started
    return result
