"""Streamed batch prediction: every format holds every row once, in order; a killed run resumes
without repeating or losing a row; a post of a label the run never learned is predicted."""

import csv
import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sgmft.cli import app
from sgmft.serving import batch
from sgmft.serving.batch import predict_manifest
from tests.conftest import with_images, write_jsonl

runner = CliRunner()


@pytest.fixture
def manifest(demo_folder, tmp_path):
    rows = [json.loads(line) for line in (demo_folder / "manifest.jsonl").read_text().splitlines()]
    for row in with_images(rows, demo_folder, tmp_path):
        row["image"] = str(tmp_path / row["image"])
    rows[3]["image"] = str(tmp_path / "gone.jpg")                   # an error record
    rows[5]["label"] = "beach"                                     # a label the run never learned
    return write_jsonl(tmp_path / "posts.jsonl", rows)


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_format_holds_every_row_in_order(predictor, manifest, tmp_path):
    outs = {suffix: tmp_path / f"p{suffix}" for suffix in (".jsonl", ".json", ".csv", ".parquet")}
    for out in outs.values():
        summary = predict_manifest(predictor, manifest, out, progress=False, block_rows=7)
        assert summary.predicted == 39 and summary.errors == 1
        assert not out.with_name(out.name + ".partial").exists()
        assert not out.with_name(out.name + ".progress.json").exists()
    records = jsonl(outs[".jsonl"])
    assert [r["row"] for r in records] == list(range(1, 41))
    assert "missing image" in records[3]["error"] and records[5]["true_label"] == "beach"
    assert records[5]["label"] in predictor.labels
    assert json.loads(outs[".json"].read_text()) == records
    with open(outs[".csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    table = pq.read_table(outs[".parquet"]).to_pylist()
    for flat_rows in (rows, table):
        assert [str(r["id"]) for r in flat_rows] == [r["id"] for r in records]
        assert [r["label"] or None for r in flat_rows] == [r.get("label") for r in records]
    assert table[0]["p_home"] == pytest.approx(records[0]["probabilities"]["home"])
    assert table[3]["error"] and table[0]["warnings"] == records[0]["warnings"]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_killed_prediction_resumes_without_repeating_or_losing_a_row(predictor, manifest, tmp_path,
                                                                      monkeypatch, suffix):
    whole = tmp_path / f"whole{suffix}"
    predict_manifest(predictor, manifest, whole, progress=False, block_rows=6)
    out = tmp_path / f"killed{suffix}"
    real, calls = batch._predict_posts, []

    def dies_in_block_4(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "_predict_posts", dies_in_block_4)
    with pytest.raises(KeyboardInterrupt):
        predict_manifest(predictor, manifest, out, progress=False, block_rows=6)
    assert not out.exists() and out.with_name(out.name + ".progress.json").is_file()
    monkeypatch.setattr(batch, "_predict_posts", real)
    summary = predict_manifest(predictor, manifest, out, progress=False, block_rows=6, resume=True)
    assert summary.resumed_rows == 18 and summary.predicted == 39 and summary.errors == 1

    def rows(path):
        return jsonl(path) if suffix == ".jsonl" else pq.read_table(path).to_pylist()

    assert rows(out) == rows(whole)


def test_a_csv_naming_a_column_twice_is_an_error_not_an_empty_output(sgmft_run, tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("id,text,image,text\n1,在家,a.png,x\n", encoding="utf-8")
    result = runner.invoke(app, ["predict", str(sgmft_run), "--manifest", str(path), "--out",
                                 str(tmp_path / "p.jsonl")])
    assert result.exit_code == 1 and "appear more than once" in result.output
