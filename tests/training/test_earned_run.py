"""A run whose validation cannot speak for new groups keeps its defaults and says why; its
answers carry novelty flags, its sets follow each post's presence pattern, a batch reports its
drift, and evaluate counts the answered posts."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sgmft.cli import app
from sgmft.data.demo import make_demo
from sgmft.training.config import resolve_config
from sgmft.training.run import train_run
from sgmft.training.rundir import load_run
from tests.conftest import write_jsonl

runner = CliRunner()
TINY = [
    "model.dim=16",
    "model.heads=2",
    "model.head_dim=4",
    "model.ffn_hidden=16",
    "model.classifier_hidden=[16,16,16,16]",
    "train.epochs=6",
    "train.min_steps=0",
    "train.early_stopping=2",
    "train.batch_size=16",
    "train.folds=3",
    "train.lr=0.005",
    "train.calibration=0.2",
    "train.calibration_min_posts=1",
]


@pytest.fixture(scope="module")
def one_event_run(tmp_path_factory):
    """The demo posts with a ``group`` column in which one event holds every label and the other
    events one label each, none of them home (the shape of me16-dev, where the real posts are
    all in one event): home is shown by one group."""
    folder = tmp_path_factory.mktemp("earned")
    manifest = make_demo(folder / "data", posts_per_class=8)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for i, row in enumerate(rows):
        alone = i % 3 == 0 or row["label"] == "home"
        row["group"] = "mixed" if alone else f"only-{row['label']}-{i % 2}"
    write_jsonl(manifest, rows)
    config = resolve_config("sgmft", [f"data.manifest={manifest}", *TINY])
    return train_run(config, folder / "run", progress=False), manifest


def test_with_one_informative_group_the_defaults_are_kept(one_event_run):
    run, _ = one_event_run
    info = json.loads((run / "run.json").read_text())
    decisions = info["decisions"]
    assert decisions["units"]["informative"] == 1
    for name in ("probe_text", "probe_image", "mixture", "temperature", "decision_offsets", "epochs"):
        assert decisions[name]["choice"] == decisions[name]["default"] and not decisions[name]["earned"]
        assert "per label" in decisions[name]["why"] or "default is the best" in decisions[name]["why"]
    assert info["mixture"]["weights"] == {"fused": 1.0, "text": 0.0, "image": 0.0, "prior": 0.0}
    assert info["temperature"] == 1.0 and info["probes"]["text"]["C"] == 1.0
    assert len(info["history"]) == 6  # the configured epochs
    assert info["ensemble"]["members"] == 3 and info["novelty"]["references"] > 0


def test_answers_carry_novelty_and_sets_of_their_presence_pattern(one_event_run, tmp_path):
    run, manifest = one_event_run
    loaded = load_run(run)
    assert not np.array_equal(loaded.conformal_scores("text_only"), loaded.conformal_scores("both"))
    assert len(loaded.conformal_scores("image_only")) == loaded.conformal["posts"]
    image = manifest.parent / json.loads(manifest.read_text().splitlines()[0])["image"]
    both = runner.invoke(
        app,
        [
            "predict",
            str(run),
            "--text",
            "今天在健身房跑步",
            "--image",
            str(image),
            "--coverage",
            "0.8",
            "--json",
        ],
    )
    body = json.loads(both.output[both.output.index("{") :])
    assert set(body["novelty"]) == {"text", "image"} and isinstance(body["unlike_training"], bool)
    assert 0 < body["novelty"]["text"] <= 1 and body["set"]
    text_only = runner.invoke(
        app, ["predict", str(run), "--text", "今天在健身房跑步", "--json", "--coverage", "0.8"]
    )
    body = json.loads(text_only.output[text_only.output.index("{") :])
    assert body["novelty"]["image"] is None and body["set"]
    # a post unlike the training posts in both modalities (here: every post, alpha raised to 1)
    # is unsure and its set every label; in one modality, its set is the wider one of 1 - 0.2 / 2
    from PIL import Image

    from sgmft.serving.predictor import PostInput, Predictor

    predictor = Predictor(run)
    post = PostInput("今天在健身房跑步", Image.open(image).convert("RGB"))
    [plain] = predictor.predict([post], coverage=0.8)
    predictor.run.novelty.alpha = 1.0
    [odd] = predictor.predict([post], coverage=0.8)
    assert odd.unlike_training and odd.label == "unsure"
    assert odd.best_guess == (plain.best_guess or plain.label)
    assert odd.set == predictor.labels and any("unlike the posts this model" in w for w in odd.warnings)
    predictor.novel_unsure = False
    [kept] = predictor.predict([post], coverage=0.8)
    assert kept.label != "unsure" or any("hardly above" in w for w in kept.warnings)


def test_a_batch_reports_its_drift_and_evaluate_counts_the_answered(one_event_run, tmp_path):
    run, manifest = one_event_run
    out = tmp_path / "pred.jsonl"
    result = runner.invoke(app, ["predict", str(run), "--manifest", str(manifest), "--out", str(out)])
    assert result.exit_code == 0, result.output
    drift = json.loads(out.with_name("pred.jsonl.drift.json").read_text())
    assert drift["text"]["posts"] == len(manifest.read_text().splitlines()) and 0 <= drift["text"]["auc"] <= 1
    assert not out.with_name("pred.jsonl.drift-sample.npz").exists()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all("unlike_training" in r and set(r["novelty"]) == {"text", "image"} for r in records)
    assert drift["text"]["flagged"] == pytest.approx(
        np.mean([r["novelty"]["text"] <= 0.05 for r in records]), abs=1e-3
    )
    # with a coverage, the batch's sets are weighted for its shift, learned from the batch first
    sets = tmp_path / "sets.jsonl"
    result = runner.invoke(app, ["predict", str(run), "--manifest", str(manifest), "--out", str(sets),
                                 "--coverage", "0.8"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in sets.read_text().splitlines()]
    assert all(r["set_weighted"] and (r.get("best_guess") or r["label"]) in r["set"] for r in records)
    assert runner.invoke(app, ["evaluate", str(run), "--no-figures"]).exit_code == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    answered = metrics["answered"]
    assert 0 <= answered["share"] <= 1 and answered["accuracy_all"] == pytest.approx(metrics["accuracy"])
    assert {"flagged", "unlike_both"} <= set(metrics["novelty"]) and "auc" in metrics["drift"]["text"]
    weighted = metrics["sets"]["weighted"]
    assert 0 <= weighted["coverage"] <= 1 and weighted["mean_size"] >= 1
    assert metrics["refit_alone"]["accuracy"] >= 0


def test_a_novelty_file_that_cannot_be_read_is_said_not_raised(one_event_run, tmp_path, caplog):
    import shutil

    from sgmft.training.rundir import load_run

    run, _ = one_event_run
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "novelty.safetensors").write_bytes(b"not a safetensors file")
    assert load_run(copy).novelty is None
    assert "cannot be read" in caplog.text and "train the run again" in caplog.text
    result = runner.invoke(app, ["predict", str(copy), "--text", "今天在健身房跑步", "--json"])
    body = json.loads(result.output[result.output.index("{"):])
    assert "novelty" not in body and body["label"]
