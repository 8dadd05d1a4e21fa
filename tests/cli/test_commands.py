"""The command line end to end, with the real default encoders on a small demo set."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sgmft import PLACES
from sgmft.cli import app
from tests.conftest import with_images, write_jsonl

runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    result = runner.invoke(app, ["demo", str(folder), "--posts-per-class", "5"])
    assert result.exit_code == 0, result.output
    return folder / "manifest.jsonl"


def test_validate_ok(demo):
    result = runner.invoke(app, ["validate", str(demo)])
    assert result.exit_code == 0, result.output
    assert "40 valid posts, 0 invalid rows" in result.output
    assert "home 5" in result.output


def test_validate_reports_bad_rows_and_exits_3(tmp_path, demo):
    rows = [json.loads(line) for line in demo.read_text().splitlines()[:3]]
    rows[0]["image"] = str(demo.parent / rows[0]["image"])
    rows[1] = {**rows[0], "id": "other", "label": "airport"}
    path = write_jsonl(demo.parent / "bad.jsonl", rows)
    result = runner.invoke(app, ["validate", str(path), "--labels", ",".join(PLACES)])
    assert result.exit_code == 3
    assert "row 2" in result.output and "unknown label 'airport'" in result.output
    assert "2 valid posts, 1 invalid row\n" in result.output
    outside = write_jsonl(tmp_path / "outside.jsonl", rows[:1])
    result = runner.invoke(app, ["validate", str(outside)])
    assert result.exit_code == 4 and "outside the image root" in result.output


def test_labels_are_the_datas_own_when_they_are_not_places(tmp_path, demo):
    rows = [json.loads(line) for line in demo.read_text().splitlines()[:8]]
    mine = ("kitchen", "beach", "office", "park")
    path = write_jsonl(demo.parent / "mine.jsonl", [{**r, "label": mine[i % 4]} for i, r in enumerate(rows)])
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "labels from the data" in result.output and "beach 2, kitchen 2, office 2, park 2" in result.output
    from sgmft.data.manifest import load_manifest
    from sgmft.training.prepare import labels_with_posts

    loaded = load_manifest(path, any_label=True)
    assert labels_with_posts(loaded).labels == ("beach", "kitchen", "office", "park")
    assert labels_with_posts(load_manifest(demo)).labels == PLACES


def test_extract_then_reuse(demo, tmp_path):
    out = tmp_path / "features"
    result = runner.invoke(app, ["extract", str(demo), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "features of 40 posts" in result.output and "text 512-d, image 1280-d" in result.output
    header = json.loads((out / "cache.json").read_text())
    assert header["encoder_identity"]["name"] == "use+effnet" and header["complete"]
    assert header["text_preprocessing"]["segment"] is True
    mtime = (out / "chunk-00000.safetensors").stat().st_mtime_ns
    again = runner.invoke(app, ["extract", str(demo), "--out", str(out)])
    assert again.exit_code == 0 and (out / "chunk-00000.safetensors").stat().st_mtime_ns == mtime
    other = runner.invoke(app, ["extract", str(demo), "--out", str(out), "--encoder", "e5+effnet"])
    assert other.exit_code == 1 and "--overwrite" in other.output


def test_extract_fails_on_bad_rows_unless_skipped(tmp_path, demo):
    rows = rows_of(demo, 3, into=tmp_path)
    rows[1]["image"] = str(tmp_path / "gone.jpg")
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    failed = runner.invoke(app, ["extract", str(path), "--out", str(tmp_path / "f")])
    assert failed.exit_code == 1 and "row 2" in failed.output and "missing image" in failed.output
    skipped = runner.invoke(app, ["extract", str(path), "--out", str(tmp_path / "f"),
                                  "--skip-invalid"])
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 1 invalid row(s)" in skipped.output and "features of 2 posts" in skipped.output


def test_encoders_listed():
    result = runner.invoke(app, ["encoders"])
    assert "chinese-clip" in result.output and "use+effnet  (default)" in result.output


FAST = ["--config", "fast", "--set", "train.epochs=2", "--set", "model.dim=32"]


def test_train_evaluate_and_resume(demo, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", str(demo), "--out", str(run), *FAST])
    assert result.exit_code == 0, result.output
    assert "trained sg-mft for 2 epochs" in result.output
    for name in ("config.json", "model.safetensors", "labels.json", "vocab.json", "run.json",
                 "checkpoint.pt"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == 0 and len(info["data_hash"]) == 64 and info["versions"]["torch"]
    assert info["split"]["test"] == 8 and info["features"]["encoder"]["name"] == "use+effnet"
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["dim"] == 32 and config["train"]["lr"] == 5e-4

    evaluated = runner.invoke(app, ["evaluate", str(run)])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 8 and 0 <= metrics["accuracy"] <= 1 and len(metrics["per_class"]) == 8
    assert (run / "eval" / "confusion.png").is_file() and (run / "eval" / "tsne.png").is_file()
    assert "gate_mean" in metrics and metrics["config"]["model"]["dim"] == 32
    assert metrics["versions"]["torch"].startswith("2.13.0")

    resumed = runner.invoke(app, ["train", "--data", str(demo), "--out", str(run), *FAST, "--resume"])
    assert resumed.exit_code == 0 and "2 epochs" in resumed.output
    other = runner.invoke(app, ["train", "--data", str(demo), "--out", str(run), "--resume",
                                "--config", "fast"])
    assert other.exit_code == 1 and "another configuration" in other.output


def test_train_rejects_bad_settings(demo, tmp_path):
    result = runner.invoke(app, ["train", "--data", str(demo), "--out", str(tmp_path / "r"),
                                 "--set", "model.fusion=nope"])
    assert result.exit_code == 2 and "unknown fusion 'nope'" in result.output
    result = runner.invoke(app, ["train", "--data", str(demo), "--out", str(tmp_path / "r"),
                                 "--set", "model.colour=red"])
    assert result.exit_code == 2 and "unknown model field" in result.output


def test_evaluate_missing_run(tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "none")])
    assert result.exit_code == 1 and "run" in result.output and "not found" in result.output


def test_reproduce_writes_every_table_row_and_figures(demo, tmp_path):
    out = tmp_path / "results"
    result = runner.invoke(app, ["reproduce", "--data", str(demo), "--out", str(out), "--seeds", "1",
                                 "--set", "train.epochs=1", "--set", "model.dim=16", "--preset", "fast",
                                 "--set", "model.classifier_hidden=[16,16,16,16]"])
    assert result.exit_code == 0, result.output
    tables = (out / "tables.md").read_text()
    for row in ("mPLUG", "UniS-MMC", "BridgeTower", "BalanceMLA", "feature-level fusion CNNs",
                "Baseline + encoder + SIM + SFM", "Merge-Attention", "Image-wise", "Text-wise (ours)",
                "**SG-MFT (fast preset)**", "reference: majority class",
                "reference: logistic regression, text + image features"):
        assert f"| {row} |" in tables
    assert tables.count("| **SG-MFT (fast preset)** |") == 4           # a row in every table
    assert tables.count("| reference: majority class |") == 4
    assert tables.count("±") >= 2 * (17 + 4 * 5)  # the paper's 17 rows, 5 more rows per table
    assert "split: stratified 80%/20%, seed 0" in tables
    assert tables.count("| ECE (%) |") == 4
    for figure in ("figure5_module_ablation", "figure7_fusion_modules", "figure8_sff_side"):
        assert (out / f"{figure}.png").is_file()
    results = json.loads((out / "results.json").read_text())
    assert len(results["results"]["sg-mft"]) == 1 and results["seeds"] == 1
    # a second call reuses every finished run
    mtime = (out / "runs" / "sg-mft" / "seed0" / "model.safetensors").stat().st_mtime_ns
    again = runner.invoke(app, ["reproduce", "--data", str(demo), "--out", str(out), "--seeds", "1",
                                "--set", "train.epochs=1", "--set", "model.dim=16", "--preset", "fast",
                                "--set", "model.classifier_hidden=[16,16,16,16]"])
    assert again.exit_code == 0
    assert (out / "runs" / "sg-mft" / "seed0" / "model.safetensors").stat().st_mtime_ns == mtime


# --- a new user's own data (issue "your own data, start to finish") ---------------------------


@pytest.fixture(scope="module")
def demo80(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo80")
    assert runner.invoke(app, ["demo", str(folder), "--posts-per-class", "10"]).exit_code == 0
    return folder / "manifest.jsonl"


def rows_of(manifest, n=None, into=None):
    """The first ``n`` rows of ``manifest``, their images copied into the folder ``into`` (where
    the test writes its manifest: image paths may not leave a manifest's folder), as absolute
    paths there."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines()[:n]]
    for row in with_images(rows, manifest.parent, into):
        row["image"] = str(into / row["image"])
    return rows


def test_help_describes_every_command():
    result = runner.invoke(app, ["--help"])
    for command in ("demo", "validate", "extract", "train", "evaluate", "study", "reproduce",
                    "predict", "profile", "serve", "export", "variants", "encoders"):
        assert command in result.output.split("Commands:")[1], command
    assert "study (search configurations)" in result.output


def test_default_train_uses_the_recommended_preset_and_learns(demo80, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", str(demo80), "--out", str(run)])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["fallback"] and config["train"]["early_stopping"] > 0   # not the paper's
    assert "after 5 folds" in result.output and "out-of-fold accuracy" in result.output
    assert "temperature" in result.output and "next: sgmft evaluate" in result.output
    assert "warning" not in result.output
    evaluated = runner.invoke(app, ["evaluate", str(run)])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.5                      # chance is 1/8
    assert {"fused_head", "text_only", "image_only"} <= set(metrics)
    assert "accuracy of the parts" in evaluated.output


def test_a_run_that_does_not_learn_says_so(demo, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", str(demo), "--out", str(run), "--config", "paper",
                                 "--set", "train.epochs=1", "--set", "model.dim=16"])
    assert result.exit_code == 0, result.output
    assert "near chance" in result.output
    assert any("near chance" in w for w in json.loads((run / "run.json").read_text())["warnings"])


def test_a_finished_run_is_not_overwritten_without_asking(demo, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--data", str(demo), "--out", str(run), *FAST]
    assert runner.invoke(app, args).exit_code == 0
    before = (run / "model.safetensors").read_bytes()
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert (run / "model.safetensors").read_bytes() == before
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_text_only_posts_are_left_out_of_training_and_scored_apart_by_evaluate(demo, tmp_path):
    rows = rows_of(demo, into=tmp_path)
    for row in rows[:3]:
        row["image"] = ""
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", "--data", str(path), "--out", str(run), *FAST])
    assert trained.exit_code == 0, trained.output
    assert "3 text-only posts (no image) left out" in trained.output
    assert json.loads((run / "run.json").read_text())["text_only_posts"] == 3
    evaluated = runner.invoke(app, ["evaluate", str(run), "--no-figures"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "text-only posts (no image, left out of training, predicted from their text)" in evaluated.output
    scored = json.loads((run / "eval" / "metrics.json").read_text())["text_only_posts"]
    assert scored["posts"] == 3 and 0 <= scored["accuracy"] <= 1 and scored["accuracy_interval"][0] <= \
        scored["accuracy"] <= scored["accuracy_interval"][1]


def test_split_column_is_followed_and_tiny_data_trains(demo, tmp_path):
    """A 10-post manifest of three labels with its own split column: validate, train (no
    --set), evaluate (too few test posts for a t-SNE map: skipped with a note)."""
    rows = [r for r in rows_of(demo, into=tmp_path) if r["label"] in ("home", "work", "restaurant")][:10]
    for i, row in enumerate(rows):
        row["split"] = "test" if i % 4 == 3 else "train"
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    labels = ["--labels", "home,work,restaurant"]
    checked = runner.invoke(app, ["validate", str(path), *labels])
    assert checked.exit_code == 0 and "split column: test, train" in checked.output
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", "--data", str(path), "--out", str(run), *labels])
    assert trained.exit_code == 0, trained.output
    assert "split: the manifest's split column (8 train, 2 test)" in trained.output
    assert "folds, not 5" in trained.output or "validation: none" in trained.output   # K shrinks, and says so
    evaluated = runner.invoke(app, ["evaluate", str(run)])
    assert evaluated.exit_code == 0, evaluated.output
    assert "note: t-SNE needs at least 5 test posts" in evaluated.output
    assert (run / "eval" / "confusion.png").is_file() and not (run / "eval" / "tsne.png").exists()


def test_skipped_rows_are_counted_printed_and_recorded(demo, tmp_path):
    rows = rows_of(demo, 30, into=tmp_path)
    rows[3]["image"] = str(tmp_path / "gone.jpg")
    rows[5]["text"] = "[哈哈] http://t.cn/x"
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", str(path), "--out", str(run), *FAST, "--skip-invalid"])
    assert result.exit_code == 0, result.output
    assert "skipped 2 invalid row(s) (1 missing image, 1 empty text after cleaning)" in result.output
    skipped = json.loads((run / "run.json").read_text())["skipped_rows"]
    assert skipped["count"] == 2 and "row 4 (id" in skipped["rows"][0]
    checked = runner.invoke(app, ["validate", str(path)])
    assert checked.exit_code == 3 and "2 invalid rows" in checked.output
    assert "skipped 2" not in checked.output


def test_two_manifests_in_one_folder_never_share_a_cache(demo, tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", rows_of(demo, 24, into=tmp_path))
    second = write_jsonl(tmp_path / "b.jsonl", rows_of(demo, None, into=tmp_path)[8:40])
    for manifest, run in ((first, "ra"), (second, "rb")):
        result = runner.invoke(app, ["train", "--data", str(manifest), "--out", str(tmp_path / run), *FAST])
        assert result.exit_code == 0, result.output
    caches = sorted(p.name for p in (tmp_path / ".sgmft").glob("features-*"))
    assert len(caches) == 2


def test_evaluate_refuses_changed_data_and_names_the_rows(demo, tmp_path):
    rows = rows_of(demo, None, into=tmp_path)
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", "--data", str(path), "--out", str(run), *FAST]).exit_code == 0
    rows[2]["label"] = "gym" if rows[2]["label"] != "gym" else "home"
    write_jsonl(path, [*rows, {**rows[0], "id": "new-post"}])
    refused = runner.invoke(app, ["evaluate", str(run)])
    assert refused.exit_code == 1
    assert "1 changed: row 3" in refused.output and "1 added: row 41 (id 'new-post')" in refused.output
    allowed = runner.invoke(app, ["evaluate", str(run), "--allow-data-change"])
    assert allowed.exit_code == 0, allowed.output


def test_predict_manifest_reuses_the_cache_and_marks_split_and_truth(demo, tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", "--data", str(demo), "--out", str(run), *FAST]).exit_code == 0
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(run), "--manifest", str(demo), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "(features of 40 from a feature cache)" in result.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("id,row,user,split,true_label,label,p_home")
    splits = {line.split(",")[3] for line in lines[1:]}
    assert splits == {"train", "test"} and all(line.split(",")[4] for line in lines[1:])


def test_predict_and_profile_take_the_data_options(demo, tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", "--data", str(demo), "--out", str(run), *FAST]).exit_code == 0
    rows = rows_of(demo, 6, into=tmp_path)
    rows[1]["image"] = str(tmp_path / "gone.jpg")
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    out = tmp_path / "p.jsonl"
    kept = runner.invoke(app, ["predict", str(run), "--manifest", str(path), "--out", str(out)])
    assert kept.exit_code == 3 and "1 row error," in kept.output and len(out.read_text().splitlines()) == 6
    left = runner.invoke(app, ["predict", str(run), "--manifest", str(path), "--out", str(out),
                               "--skip-invalid", "--labels", ",".join(PLACES)])
    assert left.exit_code == 0 and "1 invalid row left out" in left.output
    assert len(out.read_text().splitlines()) == 5
    # profile treats a bad row as predict does: the rest is profiled, the row listed (or counted)
    listed = runner.invoke(app, ["profile", str(run), "--manifest", str(path), "--out", str(tmp_path / "p")])
    assert listed.exit_code == 3 and "left out: 1 row that" in listed.output and "listed" in listed.output
    record = json.loads((tmp_path / "p" / "profiles.json").read_text())
    assert record["row_errors"] == 1 and "missing image" in record["errors"][0]["error"]
    assert record["errors"][0]["id"] == rows[1]["id"] and record["errors"][0]["user"] == rows[1]["user"]
    assert record["population"]["posts"] == 5
    profiled = runner.invoke(app, ["profile", str(run), "--manifest", str(path), "--out", str(tmp_path / "p"),
                                   "--skip-invalid"])
    assert profiled.exit_code == 0 and "left out: 1 row that" in profiled.output
    assert "counted" in profiled.output
    record = json.loads((tmp_path / "p" / "profiles.json").read_text())
    assert record["skipped_rows"]["count"] == 1 and record["errors"] == []
    assert record["population"]["posts"] == 5


def test_labels_file_contents_are_not_echoed(tmp_path, demo):
    secret = tmp_path / "labels.txt"
    secret.write_text("only-one-secret-label\n")
    result = runner.invoke(app, ["validate", str(demo), "--labels", str(secret)])
    assert result.exit_code == 2 and "only-one-secret-label" not in result.output


def test_version_and_clear_errors_for_devices_ports_and_full_disks(demo, tmp_path, monkeypatch):
    import socket

    import torch

    assert runner.invoke(app, ["--version"]).output.startswith("sgmft ")
    if not torch.cuda.is_available():
        no_gpu = runner.invoke(app, ["evaluate", str(tmp_path), "--device", "cuda"])
        assert no_gpu.exit_code == 2 and "no CUDA device is available" in no_gpu.output
    typo = runner.invoke(app, ["predict", str(tmp_path), "--text", "x", "--device", "gpu0"])
    assert typo.exit_code == 2 and "expected cpu, cuda or cuda:N" in typo.output
    gpus = runner.invoke(app, ["extract", str(demo), "--ray", "local", "--gpus-per-worker", "1"])
    assert gpus.exit_code == 2 and "add --device cuda" in gpus.output
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        taken = runner.invoke(app, ["serve", str(tmp_path), "--port", str(port)])
    assert taken.exit_code == 1 and f"cannot serve on 127.0.0.1:{port}" in taken.output

    from sgmft import io as sgmft_io

    def full(path, write):
        raise sgmft_io.StorageError(28, "no space left on the device holding /x (0.0 MB free)")

    monkeypatch.setattr("sgmft.encoders.cache.atomic_write", full)
    result = runner.invoke(app, ["extract", str(demo), "--out", str(tmp_path / "f"), "--overwrite"])
    assert (result.exit_code == 1 and result.output.startswith("error: no space left")) or \
        "error: no space left" in result.output
    assert "Traceback" not in result.output


def test_evaluate_reports_calibration_beside_its_floor_groups_and_warnings(demo, tmp_path):
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", "--data", str(demo), "--out", str(run), "--set", "train.folds=2",
                                  "--set", "train.epochs=4", "--set", "train.min_steps=0",
                                  "--set", "train.calibration_min_posts=1"])
    assert trained.exit_code == 0, trained.output
    assert "temperature" in trained.output and "out-of-fold accuracy" in trained.output
    evaluated = runner.invoke(app, ["evaluate", str(run), "--coverage", "0.8"])
    assert evaluated.exit_code == 0, evaluated.output
    out = evaluated.output
    assert "(95 % interval" in out and "a perfectly calibrated model with these confidences" in out
    assert "prediction sets for 80% coverage" in out and "selective prediction" in out
    assert "by user:" in out                         # the run's validation grouped by user
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for key in ("log_loss", "brier", "ece", "ece_floor_p95", "uncalibrated", "reliability", "sets",
                "selective"):
        assert key in metrics, key
    # the values agree with each other, not only exist
    confusion = np.asarray(metrics["confusion"])
    assert confusion.sum() == metrics["n"]
    assert np.trace(confusion) / metrics["n"] == pytest.approx(metrics["accuracy"])
    low, high = metrics["accuracy_interval"]
    assert low <= metrics["accuracy"] <= high
    assert sum(row["n"] for row in metrics["reliability"]) == metrics["n"]
    assert 0 <= metrics["ece"] <= 1 and metrics["log_loss"] > 0 and 0 <= metrics["brier"] <= 2
    assert metrics["sets"]["target"] == 0.8 and 1 <= metrics["sets"]["mean_size"] <= 8
    assert 0 <= metrics["sets"]["coverage"] <= 1
    assert (run / "eval" / "reliability.png").is_file() and (run / "eval" / "selective.png").is_file()
    assert f"only {metrics['n']} test post(s)" in out     # a small test part says so


def test_evaluate_warns_when_a_split_of_ones_own_shares_photos(demo, tmp_path):
    rows = rows_of(demo, None, into=tmp_path)
    for i, row in enumerate(rows):
        row["split"] = "test" if i % 5 == 0 else "train"
    rows[0]["image"] = rows[1]["image"]                  # a test post with a training post's photo
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", "--data", str(path), "--out", str(run), *FAST]).exit_code == 0
    result = runner.invoke(app, ["evaluate", str(run), "--no-figures"])
    assert result.exit_code == 0, result.output
    assert "1 of the 8 test posts share their photo" in result.output


def test_the_train_summary_says_when_every_answer_comes_from_one_modality(tmp_path, capsys):
    from sgmft.cli.training import print_train_summary

    info = {"history": [{"train_loss": 0.5}], "variant": "sg-mft", "folds": {}, "best_epoch": None,
            "mixture": {"weights": {"fused": 0.0, "text": 0.0, "image": 1.0, "prior": 0.0}},
            "skipped_rows": {"count": 0}, "warnings": []}
    (tmp_path / "run.json").write_text(json.dumps(info))
    print_train_summary(tmp_path)
    out = capsys.readouterr()
    assert "fallback mixture: fused 0.0, text 0.0, image 1.0, prior 0.0: the answer comes from the image " \
        "alone" in out.out
    assert "note: every answer comes from the image alone" in out.err


def test_one_reason_for_no_prediction_sets_everywhere():
    from sgmft.evaluation.report import set_report
    from sgmft.metrics.conformal import NO_SETS

    note = set_report(np.eye(3), np.arange(3), None, 0.9)["note"]
    assert note == NO_SETS and "held no posts out of training" in NO_SETS
    help_text = runner.invoke(app, ["predict", "--help"], terminal_width=300).output
    assert "out-of-fold" not in help_text and "held out of training" in help_text
