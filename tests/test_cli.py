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
    result = runner.invoke(app, ["demo", str(folder), "--posts-per-class", "3"])
    assert result.exit_code == 0, result.output
    return folder / "manifest.jsonl"


def test_validate_ok(demo):
    result = runner.invoke(app, ["validate", str(demo)])
    assert result.exit_code == 0, result.output
    assert "24 valid post(s), 0 invalid row(s)" in result.output
    assert "home 3" in result.output


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
    assert "features of 24 posts" in result.output and "text 384-d, image 1280-d" in result.output
    header = json.loads((out / "cache.json").read_text())
    assert header["encoder_identity"]["name"] == "e5+effnet" and header["complete"]
    assert header["text_preprocessing"]["segment"] is True
    mtime = (out / "chunk-00000.safetensors").stat().st_mtime_ns
    again = runner.invoke(app, ["extract", str(demo), "--out", str(out)])
    assert again.exit_code == 0 and (out / "chunk-00000.safetensors").stat().st_mtime_ns == mtime
    other = runner.invoke(app, ["extract", str(demo), "--out", str(out), "--encoder", "use+effnet"])
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
    assert "chinese-clip" in result.output and "e5+effnet  (default)" in result.output
