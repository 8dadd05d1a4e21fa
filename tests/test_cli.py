"""The command line end to end, with the real default encoders on a small demo set."""

import json

import pytest
from typer.testing import CliRunner

from sgmft.cli import app
from tests.conftest import write_jsonl

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
    assert "40 valid post(s), 0 invalid row(s)" in result.output
    assert "home 5" in result.output


def test_validate_reports_bad_rows_and_exits_1(tmp_path, demo):
    rows = [json.loads(line) for line in demo.read_text().splitlines()[:2]]
    rows[0]["image"] = str(demo.parent / rows[0]["image"])
    rows[1] = {**rows[0], "label": "airport"}
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "row 2" in result.output and "unknown label 'airport'" in result.output


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
    rows = [json.loads(line) for line in demo.read_text().splitlines()[:3]]
    for row in rows:
        row["image"] = str(demo.parent / row["image"])
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
    assert "trained sg-mft for 2 epoch(s)" in result.output
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
    assert resumed.exit_code == 0 and "2 epoch(s)" in resumed.output
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
    assert result.exit_code == 1 and "not a finished run" in result.output


def test_reproduce_writes_every_table_row_and_figures(demo, tmp_path):
    out = tmp_path / "results"
    result = runner.invoke(app, ["reproduce", "--data", str(demo), "--out", str(out), "--seeds", "2",
                                 "--set", "train.epochs=1", "--set", "model.dim=16",
                                 "--set", "model.classifier_hidden=[16,16,16,16]"])
    assert result.exit_code == 0, result.output
    tables = (out / "tables.md").read_text()
    for row in ("mPLUG", "UniS-MMC", "BridgeTower", "BalanceMLA", "feature-level fusion CNNs",
                "Baseline + encoder + SIM + SFM", "Merge-Attention", "Image-wise", "Text-wise (ours)"):
        assert f"| {row} |" in tables
    assert tables.count("±") >= 2 * 17  # 17 rows, accuracy and macro-F1 each
    for figure in ("figure5_module_ablation", "figure7_fusion_modules", "figure8_sff_side"):
        assert (out / f"{figure}.png").is_file()
    results = json.loads((out / "results.json").read_text())
    assert len(results["results"]["sg-mft"]) == 2 and results["seeds"] == 2
    # a second call reuses every finished run
    mtime = (out / "runs" / "sg-mft" / "seed0" / "model.safetensors").stat().st_mtime_ns
    again = runner.invoke(app, ["reproduce", "--data", str(demo), "--out", str(out), "--seeds", "2",
                                "--set", "train.epochs=1", "--set", "model.dim=16",
                                "--set", "model.classifier_hidden=[16,16,16,16]"])
    assert again.exit_code == 0
    assert (out / "runs" / "sg-mft" / "seed0" / "model.safetensors").stat().st_mtime_ns == mtime
