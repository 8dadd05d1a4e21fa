"""Checkpoints: random states round-trip and always come back as CPU tensors, whatever a loader
maps them to; one decision to checkpoint for every process; empty validation shards."""

import random

import numpy as np
import pytest
import torch

from sgmft.training import checkpoint as module
from sgmft.training.checkpoint import (
    TrainingState,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sgmft.training.config import TrainConfig
from sgmft.training.trainer import Parallel, fit, validation_scores
from tests.training.test_trainer import new_model, toy_problem


def draws():
    return torch.rand(3).tolist(), np.random.rand(2).tolist(), random.random()


def test_random_states_round_trip():
    saved = rng_state()
    first = draws()
    set_rng_state(saved)
    assert draws() == first


def test_random_states_mapped_to_another_device_or_dtype_still_restore():
    """A loader that maps tensors elsewhere (``map_location=device`` once moved them to the GPU,
    where ``set_rng_state`` refuses them): they come back as CPU bytes."""
    saved = rng_state()
    first = draws()
    moved = {**saved, "torch": saved["torch"].to(torch.int64)}    # what a mapped load could give
    set_rng_state(moved)
    assert draws() == first


def test_a_checkpoint_is_always_read_onto_the_cpu(tmp_path, monkeypatch):
    model, optimizer = new_model(), None
    optimizer = torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, 4, model, optimizer, scaler, [rng_state()], TrainingState(history=[{"epoch": 4}]))
    seen = []
    real_load = torch.load
    def load(*args, **kwargs):
        seen.append(kwargs.get("map_location"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(module.torch, "load", load)
    restored = load_checkpoint(path, new_model(seed=5), torch.optim.Adam(new_model().parameters()), scaler)
    assert seen == ["cpu"] and restored.start_epoch == 5 and restored.history == [{"epoch": 4}]
    with pytest.raises(ValueError, match="resume with as many"):
        load_checkpoint(path, new_model(), optimizer, scaler, rank=0, world=2)


class OtherRankDue(Parallel):
    """One of two processes, whose partner's clock says a checkpoint is due after epoch 0
    (this one's, with an hour's interval, never does)."""

    world = 2
    epoch = 0

    def sum(self, values):
        return [2 * v for v in values]          # the partner reports the same counts

    def any(self, flag):
        return flag or self.epoch == 0

    def order(self, n, seed, epoch, chunks=None):
        self.epoch = epoch
        return super().order(n, seed, epoch, chunks)[: n // 2]


def test_the_decision_to_checkpoint_is_one_for_every_process(tmp_path):
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=0, checkpoint_seconds=3600)
    seen = []

    class Stop(Exception):
        pass

    def stop_after_first(epoch, record):
        seen.append((tmp_path / "checkpoint.pt").is_file())
        raise Stop

    with pytest.raises(Stop):
        fit(new_model(), toy_problem(64, 0), config, tmp_path, parallel=OtherRankDue(), progress=False,
            on_epoch_end=stop_after_first)
    assert seen == [True]          # written because the other process's clock said so


class EmptyShard(Parallel):
    """A process whose share of a 1-post validation part is empty (the other holds the post)."""

    def shard(self, tensors):
        return {k: v[:0] for k, v in tensors.items()}

    def sum(self, values):
        return [values[0] + 1.0, values[1] + 0.5, values[2] + 1.0]     # the partner: right, loss 0.5


def test_an_empty_validation_shard_is_no_crash():
    accuracy, loss = validation_scores(new_model(), toy_problem(1, 0), TrainConfig(), EmptyShard())
    assert (accuracy, loss) == (1.0, 0.5)
