"""Training under torchrun: DistributedDataParallel beside the single-process default.

    torchrun --nproc_per_node 2 -m sgmft train --data posts.jsonl --out run
    sgmft train --nproc 2 --data posts.jsonl --out run        # the same, launched for you

gloo on CPUs, nccl on CUDA (one GPU per process, ``LOCAL_RANK``). Every process loads the
manifest and the feature cache (the main one first: it extracts when needed, then the others
reuse the cache), builds the same model from the run's seed, and trains on its share of each
global batch of ``train.batch_size`` (a DistributedSampler with the run's seed); DDP averages
the gradients. Validation is predicted in shares and the counts summed, so every process takes
the same early-stopping decision. Only the main process writes: the run folder is the same as
a single-process run's; checkpoints hold every process's random state, so ``--resume`` (with
the same number of processes) continues exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from sgmft.models.model import MultimodalModel
from sgmft.training.checkpoint import rng_state
from sgmft.training.config import RunConfig
from sgmft.training.data import Data, select
from sgmft.training.trainer import Parallel


def launched() -> bool:
    """True inside a torchrun process group of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class DistributedParallel(Parallel):
    """The torchrun processes of an initialised process group."""

    def __init__(self, device: torch.device):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = device

    def order(self, n: int, seed: int, epoch: int, chunks: np.ndarray | None = None) -> torch.Tensor:
        """This rank's rows: torch's `DistributedSampler` (a full shuffle, whatever ``chunks``)."""
        sampler = DistributedSampler(range(n), num_replicas=self.world, rank=self.rank, shuffle=True,
                                     seed=seed)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.long)

    def wrap(self, model: MultimodalModel) -> torch.nn.Module:
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, tensors: Data) -> Data:
        """This rank's rows (every world-th from its rank); features stay views, so a rank
        reads only its rows."""
        return select(tensors, np.arange(len(tensors["label"]))[self.rank::self.world])

    def sum(self, values: list[float]) -> list[float]:
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.tolist()

    def rng_states(self) -> list[dict[str, Any]]:
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, rng_state())
        return states

    def barrier(self) -> None:
        dist.barrier()


def train_distributed(config: RunConfig, out: Path, resume: bool = False, overwrite: bool = False,
                      progress: bool = True) -> Path:
    """Join the torchrun process group, train, leave it. ``train.device`` "cuda" means this
    process's GPU (``LOCAL_RANK``)."""
    from sgmft.training.run import train_run

    cuda = config.train.device.startswith("cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        return train_run(config, out, resume=resume, progress=progress, overwrite=overwrite,
                         parallel=DistributedParallel(device), device=str(device))
    finally:
        dist.destroy_process_group()


def launch(nproc: int, arguments: list[str]) -> int:
    """Run ``sgmft ARGUMENTS`` under torchrun with ``nproc`` processes on this machine; returns
    torchrun's exit status. (For several machines, run torchrun yourself: docs/scale.md.)"""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "sgmft", *arguments]
    return subprocess.call(command)
