"""Training under torchrun (DDP, gloo): two CPU processes. Exactness, never accuracy: a step of
two processes on half batches is the step of one process on the whole batch, and a killed
two-process run resumes to the uninterrupted run's weights bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from sgmft.data.demo import make_demo

#: one optimizer step on a 16-post batch (SGD: a step linear in the gradient)
ONE_STEP = {"epochs": 1, "batch_size": 16, "lr": 0.1, "seed": 0, "optimizer": "sgd"}
#: fixed epochs (no early stopping) so that runs compare step for step
SETTINGS = ["--config", "fast", *(arg for item in (
    "model.dim=16", "model.heads=2", "model.head_dim=4", "model.classifier_hidden=[32,32,16,16]",
    "train.epochs=12", "train.batch_size=16", "train.lr=3e-3", "train.checkpoint_seconds=0")
    for arg in ("--set", item))]


def sgmft(*arguments, wait=True):
    command = [sys.executable, "-m", "sgmft", *arguments]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    manifest = make_demo(tmp_path_factory.mktemp("ddp"), posts_per_class=30)
    assert sgmft("extract", str(manifest)).returncode == 0
    return manifest


def train(demo, out, *extra, wait=True):
    return sgmft("train", "--data", str(demo), "--out", str(out), *SETTINGS, *extra, wait=wait)


def _one_step(rank: int, world: int, init: str, out: str) -> None:
    """One process of ``world``: one optimizer step on its share of a 16-post batch."""
    import torch.distributed as dist

    from sgmft.training.config import TrainConfig
    from sgmft.training.distributed import DistributedParallel
    from sgmft.training.trainer import fit
    from tests.training.test_trainer import toy_problem

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        model = _no_dropout_model()
        fit(model, toy_problem(16, 0), TrainConfig(**ONE_STEP),
            Path(out) / f"rank{rank}", parallel=DistributedParallel(torch.device("cpu")), progress=False)
        if rank == 0:
            torch.save(model.state_dict(), Path(out) / "two.pt")
    finally:
        dist.destroy_process_group()


def _no_dropout_model():
    """Dropout draws differ per process by design; without it a step is a function of the batch."""
    from sgmft.models.config import ModelConfig
    from sgmft.models.model import MultimodalModel

    torch.manual_seed(0)
    return MultimodalModel(ModelConfig(dim=16, heads=2, head_dim=4, ffn_hidden=16,
                                       classifier_hidden=(32, 32, 16, 16), dropout=0.0), 10, 12, 4)


def test_a_step_of_two_processes_on_half_batches_is_one_step_on_the_whole_batch(tmp_path):
    import torch.multiprocessing as mp

    from sgmft.training.config import TrainConfig
    from sgmft.training.trainer import fit
    from tests.training.test_trainer import toy_problem

    mp.spawn(_one_step, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    one = _no_dropout_model()
    fit(one, toy_problem(16, 0), TrainConfig(**ONE_STEP), tmp_path / "one",
        progress=False)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    initial = _no_dropout_model().state_dict()
    moved = 0
    for key, value in one.state_dict().items():
        assert torch.allclose(value, two[key], atol=1e-6, rtol=0), key
        moved += int(not torch.equal(value, initial[key]))
    assert moved > 10                        # the step changed the weights: the test compares something


def test_two_processes_resume_after_a_kill_exactly(demo, tmp_path):
    two = tmp_path / "two"
    result = train(demo, two, "--nproc", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((two / "run.json").read_text())
    assert info["processes"] == 2 and len(info["history"]) == 12

    killed = tmp_path / "killed"
    launcher = train(demo, killed, "--nproc", "2", wait=False)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if torch.load(killed / "checkpoint.pt", weights_only=False)["epoch"] >= 3:
                break
        except (FileNotFoundError, RuntimeError, EOFError):
            pass
        time.sleep(0.2)
    children = psutil.Process(launcher.pid).children(recursive=True)
    workers = {p.environ().get("LOCAL_RANK"): p for p in children}
    assert {"0", "1"} <= set(workers)                   # torchrun's agent has no LOCAL_RANK
    os.kill(workers["1"].pid, signal.SIGKILL)           # one rank dies; torchrun stops the other
    assert launcher.wait(120) != 0
    assert not (killed / "model.safetensors").exists()
    refused = train(demo, killed, "--resume")           # one process cannot take two ranks' states
    assert refused.returncode != 0 and "resume with as many" in refused.stderr
    resumed = train(demo, killed, "--nproc", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(json.loads((killed / "run.json").read_text())["history"]) == 12
    reference, again = load_file(two / "model.safetensors"), load_file(killed / "model.safetensors")
    for key, value in reference.items():
        assert torch.equal(value, again[key]), key      # the resumed run is the uninterrupted one

