"""`sgmft study`: Optuna search, resumable, never reading the test split; and search spaces."""

import json

import optuna
import pytest
import torch

from sgmft.data.demo import make_demo
from sgmft.research.space import parse_space, read_space
from sgmft.research.study import run_study
from sgmft.training.config import resolve_config
from sgmft.training.splitfile import read_split

TINY = ["model.dim=8", "model.heads=2", "model.head_dim=2", "model.ffn_hidden=8",
        "model.classifier_hidden=[8,8,8,8]", "train.epochs=3", "train.min_steps=0",
        "train.early_stopping=2", "train.folds=2"]
SPACE = {"model.reading": {"choices": ["elements", "chunks"]},
         "model.chunks": {"choices": [2, 4], "when": {"model.reading": "chunks"}},
         "train.lr": {"low": 1e-3, "high": 1e-2, "log": True}}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("study-demo"), posts_per_class=6)


def test_space_parsing_conditions_and_errors(tmp_path):
    parameters = parse_space(SPACE)
    assert [p.name for p in parameters] == ["model.reading", "model.chunks", "train.lr"]
    assert parameters[1].active({"model.reading": "chunks"})
    assert not parameters[1].active({"model.reading": "elements"})
    assert parameters[2].log and parameters[2].low == 1e-3
    for bad, message in [({"data.encoder": {"choices": ["a"]}}, "model.FIELD or train.FIELD"),
                         ({"model.dim": {"low": 5, "high": 1}}, "low < high"),
                         ({"model.dim": {"choices": [[1, 2]]}}, "plain values"),
                         ({"model.dim": {"choices": [8], "colour": 1}}, "expected a mapping"),
                         ({"model.chunks": {"choices": [2], "when": {"model.reading": "chunks"}}},
                          "not an earlier key")]:
        with pytest.raises(ValueError, match=message):
            parse_space(bad)
    path = tmp_path / "space.json"
    path.write_text(json.dumps(SPACE))
    assert [p.name for p in read_space(str(path))] == [p.name for p in parameters]
    bundled = {p.name for p in read_space("sgmft")}
    assert {"model.gate", "model.fallback", "model.modality_dropout", "train.weight_decay"} <= bundled


def test_study_runs_resumes_reports_and_never_reads_the_test_split(demo, tmp_path):
    base = resolve_config("sgmft", [f"data.manifest={demo}", *TINY])
    out = tmp_path / "study"
    run_study(base, parse_space(SPACE), out, trials=3, confirm=2, confirm_seeds=2)
    study = optuna.load_study(study_name="sgmft", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 3
    report = (out / "study.md").read_text()
    assert "## Best trials" in report and "2 seeds each" in report and "trials per hour" in report
    assert (out / "history.png").read_bytes()[:4] == b"\x89PNG"
    best = json.loads((out / "best_config.json").read_text())
    assert best["train"]["lr"] in [t.params["train.lr"] for t in study.trials]
    confirmed = json.loads((out / "confirm.json").read_text())
    assert len(confirmed) == 2                       # 2 trials x 1 extra seed
    # the test split is never read: every trial trained and scored inside the training split
    split = next((demo.parent / ".sgmft").glob("split-stratified-*.json"))
    test_ids = set(json.loads(split.read_text())["test"])
    for trial in (out / "trials").iterdir():
        record = read_split(trial)
        assert not test_ids & (set(record["train"]) | set(record["val"]) | set(record["test"]))
    # resuming: two more trials on top of the three, nothing redone
    run_study(base, parse_space(SPACE), out, trials=5, confirm=2, confirm_seeds=2)
    study = optuna.load_study(study_name="sgmft", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 5
    with pytest.raises(ValueError, match="other settings"):
        other = resolve_config("sgmft", [f"data.manifest={demo}", *TINY, "train.batch_size=8"])
        run_study(other, parse_space(SPACE), out, trials=6)


def test_a_resumed_study_draws_new_start_up_trials(demo, tmp_path):
    """Once every resume re-seeded the sampler and drew the first trials' values again."""
    base = resolve_config("sgmft", [f"data.manifest={demo}", *TINY])
    out = tmp_path / "study"
    run_study(base, parse_space(SPACE), out, trials=2, confirm=0)
    run_study(base, parse_space(SPACE), out, trials=4, confirm=0)
    study = optuna.load_study(study_name="sgmft", storage=f"sqlite:///{out / 'study.db'}")
    first, resumed = [t.params for t in study.trials[:2]], [t.params for t in study.trials[2:]]
    assert len(resumed) == 2 and resumed != first


def test_a_killed_study_resumes(demo, tmp_path):
    """kill -9 the study process during a trial, start it again: it finishes the trials it was
    asked for, counting those done before the kill."""
    import os
    import signal
    import subprocess
    import sys
    import time

    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    out = tmp_path / "study"
    command = [sys.executable, "-m", "sgmft", "study", "--data", str(demo), "--out", str(out),
               "--space", str(space), "--trials", "4", "--confirm", "1", "--confirm-seeds", "1",
               *[arg for item in TINY for arg in ("--set", item)], "--set", "train.epochs=30",
               "--set", "train.early_stopping=0"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (out / "trials" / "0001").exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    study = optuna.load_study(study_name="sgmft", storage=f"sqlite:///{out / 'study.db'}")
    finished_before = sum(t.state.is_finished() for t in study.trials)
    assert finished_before >= 1 and not (out / "study.md").exists()
    assert subprocess.run(command, capture_output=True, timeout=600).returncode == 0
    study = optuna.load_study(study_name="sgmft", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 4
    assert "## Best trials" in (out / "study.md").read_text()


def test_a_macro_f1_study_scores_trials_by_macro_f1(demo, tmp_path):
    from sklearn.metrics import f1_score

    from sgmft.evaluation.evaluate import test_outputs
    from sgmft.research.study import study_split
    from sgmft.training.prepare import prepare_data
    from sgmft.training.rundir import load_run

    base = resolve_config("sgmft", [f"data.manifest={demo}", *TINY])
    out = tmp_path / "study"
    with pytest.raises(ValueError, match="unknown objective"):
        run_study(base, parse_space(SPACE), out, trials=1, objective="recall")
    run_study(base, parse_space(SPACE), out, trials=2, confirm=1, confirm_seeds=1, objective="macro_f1")
    assert "Objective: macro-F1" in (out / "study.md").read_text()
    prepared = study_split(prepare_data(base), 0.2, 0, base.train.val_by)
    study = optuna.load_study(study_name="sgmft", storage=f"sqlite:///{out / 'study.db'}")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 2
    for trial in complete:
        run = load_run(out / "trials" / f"{trial.number:04d}")
        outputs, labels = test_outputs(run, prepared)
        decided = run.model.decide(torch.from_numpy(outputs["logits"])).numpy()   # the run's labels
        expected = f1_score(labels, decided, average="macro", labels=sorted(set(labels.tolist())),
                            zero_division=0)
        assert trial.value == pytest.approx(expected)
    with pytest.raises(ValueError, match="other settings"):            # one objective per folder
        run_study(base, parse_space(SPACE), out, trials=3)
