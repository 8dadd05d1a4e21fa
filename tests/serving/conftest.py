"""Small trained runs on a demo set with the real default encoders, shared by the serving tests."""

from pathlib import Path

import pytest

from sgmft.data.demo import make_demo
from sgmft.training.config import resolve_config
from sgmft.training.run import train_run

TINY = ["train.epochs=3", "train.lr=3e-3", "train.batch_size=16", "model.dim=16", "model.heads=2",
        "model.head_dim=4", "model.classifier_hidden=[32,32,16,16]"]


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serving-demo")
    make_demo(folder, posts_per_class=5)
    return folder


def _train(demo_folder: Path, out: Path, variant: str) -> Path:
    config = resolve_config("fast", [f"data.manifest={demo_folder / 'manifest.jsonl'}", *TINY],
                            variant=variant)
    return train_run(config, out, progress=False)


@pytest.fixture(scope="session")
def sgmft_run(demo_folder, tmp_path_factory) -> Path:
    return _train(demo_folder, tmp_path_factory.mktemp("runs") / "sg-mft", "sg-mft")


@pytest.fixture(scope="session")
def unis_run(demo_folder, tmp_path_factory) -> Path:
    return _train(demo_folder, tmp_path_factory.mktemp("runs") / "unis-mmc", "unis-mmc")


@pytest.fixture(scope="session")
def predictor(sgmft_run):
    """The tiny run barely learns, so its answers would be "unsure" (no better than the label
    counts); the tests using it check the wiring, and min_gain has tests of its own."""
    from sgmft.serving.predictor import Predictor

    return Predictor(sgmft_run, min_gain=0.0)


@pytest.fixture(scope="session")
def fallback_run(demo_folder, tmp_path_factory) -> Path:
    """The recommended preset, small: cross-fitted on 3 folds, with the fallback mixture, a
    temperature and conformal scores."""
    config = resolve_config("sgmft", [f"data.manifest={demo_folder / 'manifest.jsonl'}", "train.folds=3",
                                      "train.epochs=8", "train.min_steps=0", "train.early_stopping=3",
                                      "train.calibration_min_posts=1",
                                      *TINY[1:]])
    return train_run(config, tmp_path_factory.mktemp("runs") / "fallback", progress=False)


@pytest.fixture(scope="session")
def fallback_predictor(fallback_run):
    from sgmft.serving.predictor import Predictor

    return Predictor(fallback_run)
