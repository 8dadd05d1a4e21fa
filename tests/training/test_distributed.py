"""Training under torchrun (DDP, gloo): two CPU processes on the demo features."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from sgmft.data.demo import make_demo

#: fixed epochs (no early stopping) so that runs compare step for step
SETTINGS = ["--config", "fast", *(arg for item in (
    "model.dim=16", "model.heads=2", "model.head_dim=4", "model.classifier_hidden=[32,32,16,16]",
    "train.epochs=12", "train.batch_size=16", "train.lr=3e-3", "train.checkpoint_seconds=0")
    for arg in ("--set", item))]
#: the accuracy of a 2-process run stays within this of the 1-process run (same global batch);
#: on 48 test posts one post is 2 points, and the two runs draw different batches
TOLERANCE = 0.15


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


def accuracy(run):
    result = sgmft("evaluate", str(run), "--no-figures")
    assert result.returncode == 0, result.stderr
    return json.loads((run / "eval" / "metrics.json").read_text())["accuracy"]


def test_two_processes_train_resume_after_a_kill_exactly_and_match_one(demo, tmp_path):
    one = tmp_path / "one"
    assert train(demo, one).returncode == 0
    two = tmp_path / "two"
    result = train(demo, two, "--nproc", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((two / "run.json").read_text())
    assert info["processes"] == 2 and len(info["history"]) == 12
    assert abs(accuracy(two) - accuracy(one)) <= TOLERANCE

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

