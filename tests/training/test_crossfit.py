"""Cross-fitting: K fold models, choices on their out-of-fold predictions, a refit on every
training post that carries exactly the recorded choices, resumable, and on 10 posts too."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sgmft.data.demo import make_demo
from sgmft.data.folds import Folds
from sgmft.decision.temperature import choose_temperature
from sgmft.metrics.calibration import softmax
from sgmft.training.config import resolve_config
from sgmft.training.prepare import prepare_data
from sgmft.training.run import train_run
from sgmft.training.splitfile import read_split
from tests.conftest import with_images

TINY = ["model.dim=16", "model.heads=2", "model.head_dim=4", "model.ffn_hidden=16",
        "model.classifier_hidden=[16,16,16,16]", "train.epochs=12", "train.min_steps=0",
        "train.early_stopping=3", "train.batch_size=16", "train.folds=3", "train.lr=0.005"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("crossfit"), posts_per_class=8)


def config(demo, *extra):
    return resolve_config("sgmft", [f"data.manifest={demo}", *TINY, "train.calibration_min_posts=1", *extra])


def test_the_refit_carries_the_recorded_choices(demo, tmp_path):
    run = train_run(config(demo), tmp_path / "run", progress=False)
    info = json.loads((run / "run.json").read_text())
    folds = info["folds"]
    assert folds["k"] == 3 and len(folds["models"]) == 3 and sum(folds["fold_sizes"]) == info["split"]["val"]
    kept = [m["best_epoch"] + 1 for m in folds["models"]]
    epochs = info["decisions"]["epochs"]                                # the refit's epochs, earned or not
    assert epochs["candidate"] == int(np.ceil(np.median(kept))) and epochs["default"] == 12
    assert len(info["history"]) == epochs["choice"]
    for name in ("probe_text", "probe_image", "mixture", "temperature", "decision_offsets", "epochs"):
        choice = info["decisions"][name]
        assert choice["choice"] == (choice["candidate"] if choice["earned"] else choice["default"])
    assert info["split"]["train"] == len(read_split(run)["train"])
    state = load_file(run / "model.safetensors")
    weights = info["mixture"]["weights"]
    assert state["probes.mixture"].tolist() == pytest.approx([weights[k] for k in ("fused", "text", "image",
                                                                                   "prior")])
    assert float(state["temperature"]) == pytest.approx(info["temperature"])
    worst = info["calibration"]["worst_fold_log_loss"]          # what the temperature minimises
    assert worst["after"] <= worst["before"] + 1e-9
    per_fold = info["mixture"]["per_fold"]
    assert len(per_fold) == 3 and info["mixture"]["worst_fold_log_loss"] == pytest.approx(
        max(f["log_loss"] for f in per_fold), abs=1e-6)
    # the prediction sets are calibrated on posts held out of everything, scored by the deployed model
    split = read_split(run)
    calibration = split["calibration"]
    assert calibration and not set(calibration) & (set(split["train"]) | set(split["test"]))
    from sgmft.training.data import post_tensors
    from sgmft.training.rundir import load_run
    from sgmft.training.trainer import predict

    assert json.loads((run / "conformal.json").read_text())["posts"] == len(calibration)   # a count
    loaded = load_run(run)
    conformal = {"posts": loaded.conformal_posts()}                 # from conformal.arrow
    assert [p["id"] for p in conformal["posts"]] == calibration
    assert info["conformal"]["posts"] == len(calibration)
    assert loaded.conformal_threshold(0.5) == sorted(p["score"] for p in conformal["posts"])[
        math.ceil((len(calibration) + 1) * 0.5) - 1]
    prepared = prepare_data(config(demo), progress=False)
    tensors = post_tensors(prepared.manifest, prepared.cache, calibration, loaded.vocab, loaded.config.model)
    probs = torch.softmax(predict(loaded.model, tensors)["logits"], -1)
    expected = 1 - probs[torch.arange(len(calibration)), tensors["label"]]
    assert np.allclose([p["score"] for p in conformal["posts"]], expected.numpy(), atol=2e-6)
    for k in range(3):
        assert (run / "folds" / f"fold-{k}" / "fold.safetensors").is_file()
        assert not (run / "folds" / f"fold-{k}" / "checkpoint.pt").exists()


def test_a_run_killed_among_its_folds_resumes_from_the_folds_it_finished(demo, tmp_path, monkeypatch):
    from sgmft.training import crossfit

    reference = train_run(config(demo), tmp_path / "ref", progress=False)
    prepared = prepare_data(config(demo), progress=False)

    class Killed(Exception):
        pass

    real = crossfit.fit_fold

    def killed_in_fold_1(*args, **kwargs):
        if args[3] == 1:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(crossfit, "fit_fold", killed_in_fold_1)
    with pytest.raises(Killed):
        train_run(config(demo), tmp_path / "run", prepared, progress=False)
    finished = tmp_path / "run" / "folds" / "fold-0" / "fold.safetensors"
    assert finished.is_file() and not (tmp_path / "run" / "folds" / "fold-1" / "fold.safetensors").exists()
    written = finished.stat().st_mtime_ns
    monkeypatch.setattr(crossfit, "fit_fold", real)
    train_run(config(demo), tmp_path / "run", prepared, resume=True, progress=False)
    assert finished.stat().st_mtime_ns == written                       # read back, not trained again
    before = load_file(reference / "model.safetensors")
    after = load_file(tmp_path / "run" / "model.safetensors")
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


def test_ten_posts_train_with_fewer_folds_and_say_so(demo, tmp_path, caplog):
    rows = [json.loads(line) for line in demo.read_text().splitlines()]
    small = [r for r in rows if r["label"] in ("home", "work", "gym")][:10]
    with_images(small, demo.parent, tmp_path)
    for i, row in enumerate(small):
        row["user"] = f"user{i % 5}"
    path = tmp_path / "ten.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in small))
    with caplog.at_level("INFO"):
        labels = 'data.labels=["home","work","gym"]'
        run = train_run(resolve_config("sgmft", [f"data.manifest={path}", labels]), tmp_path / "run",
                        progress=False)
    info = json.loads((run / "run.json").read_text())
    # the 8 training posts of at most 5 users: fewer than 5 folds, and the run says why not 5
    k = info["folds"]["k"]
    assert 2 <= k < 5 and "validation:" in caplog.text
    assert info["split"]["val_by"].startswith(f"{k} folds by user; {k} folds, not 5: only ")


def test_the_temperature_softens_only_when_the_folds_could_not_hold_out_the_groups():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(600, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits)])
    shy = np.log(softmax(logits / 2))                   # underconfident: the fit sharpens, T near 0.5
    fold = np.arange(600) % 3
    shift_like = Folds([], [], 3, "by event")
    images_instead = replace(shift_like, shift_like=False)
    fitted, rule = choose_temperature("auto", shift_like, shy, labels, fold, errors=300)
    assert fitted == pytest.approx(0.5, rel=0.2) and rule == "fitted on the worst fold"
    softened, rule = choose_temperature("auto", images_instead, shy, labels, fold, errors=300)
    assert softened == 1.0 and "softening only" in rule
    free, _ = choose_temperature("fit", images_instead, shy, labels, fold, errors=300)
    assert free == pytest.approx(fitted)
    sure = np.log(softmax(logits * 3))                  # overconfident: softening is allowed
    assert choose_temperature("auto", images_instead, sure, labels, fold, errors=300)[0] > 2
    assert choose_temperature("off", shift_like, sure, labels, fold, errors=300)[0] == 1.0
    assert choose_temperature("fit", shift_like, sure, labels, fold, errors=0)[0] == 1.0


def test_without_early_stopping_the_refit_trains_the_epochs_the_folds_trained(demo, tmp_path):
    # the review's case: the fallback on and early stopping off; every fold trains all its
    # epochs and keeps the last, so the refit must train as many (it trained the best epoch's)
    run = train_run(config(demo, "train.early_stopping=0", "train.epochs=9", "model.fallback=true"),
                    tmp_path / "run", progress=False)
    info = json.loads((run / "run.json").read_text())
    assert [m["epochs"] for m in info["folds"]["models"]] == [9, 9, 9]
    assert len(info["history"]) == 9


def test_final_config_takes_the_median_of_the_kept_epochs_only_when_earned():
    from sgmft.decision.earned import Units
    from sgmft.training.crossfit import FoldResult, final_config

    def history(best, worse_by):     # validation losses that fall to the best epoch, then rise
        return [{"val_loss": 1.0 - 0.01 * min(e, best) + worse_by * max(0, e - best)} for e in range(20)]

    results = [FoldResult(history(best, 0.02), best, 20, 1.0, torch.zeros(1, 2)) for best in (3, 5, 7, 9, 12)]
    base = resolve_config("sgmft", ["train.epochs=20"])
    informed = Units(np.arange(30) % 10, 10, "ten events")
    early, record = final_config(base, results, informed)
    assert record["earned"] and record["candidate"] == 8                 # best + 1: 4, 6, 8, 10, 13
    assert early.train.epochs == 8 and early.train.early_stopping == 0 and early.train.min_steps == 0
    kept, record = final_config(base, results, Units(np.zeros(30, int), 1, "one event"))
    assert not record["earned"] and kept.train.epochs == 20 and kept.train.early_stopping == 0
    flat = [FoldResult(history(best, 0.0), best, 20, 1.0, torch.zeros(1, 2)) for best in (3, 7, 12)]
    assert not final_config(base, flat, informed)[1]["earned"]           # no loss to gain: the default


def test_a_calibration_part_too_small_to_calibrate_is_not_carved(demo):
    from sgmft.training.prepare import calibration_part

    prepared = prepare_data(config(demo), progress=False)
    small = resolve_config("sgmft", [f"data.manifest={demo}"])            # 10 % of 51 posts < 200
    assert calibration_part(small, prepared) is None
    carved = calibration_part(config(demo), prepared).validated            # the floor lowered to 1
    assert carved and set(carved) <= set(prepared.split["train"])
    assert len(carved) < 0.3 * len(prepared.split["train"])
