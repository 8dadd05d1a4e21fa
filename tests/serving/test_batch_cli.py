"""CLI predict (one post, a manifest), profile and export, end to end."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sgmft.cli import app
from tests.conftest import with_images, write_jsonl

runner = CliRunner()


def test_predict_one_post(sgmft_run, demo_folder):
    post = ["predict", str(sgmft_run), "--text", "今天在健身房跑步", "--image",
            str(demo_folder / "images" / "gym-000.jpg")]
    result = runner.invoke(app, post)
    assert result.exit_code == 0, result.output
    assert "label: " in result.output and "text alone:" in result.output and "image alone:" in result.output
    assert "similarity gate" not in result.output and "logistic" not in result.output   # --explain's
    explained = runner.invoke(app, [*post, "--explain"]).output
    assert "similarity gate P^m" in explained and "logistic" in explained
    as_json = runner.invoke(app, ["predict", str(sgmft_run), "--text", "在家", "--json", "--min-gain", "0"])
    body = json.loads(as_json.output[as_json.output.index("{"):])
    assert body["label"] in body["probabilities"]
    # the tiny run's answers are hardly above the label counts: by default they are unsure
    default = runner.invoke(app, ["predict", str(sgmft_run), "--text", "在家", "--json"])
    body = json.loads(default.output[default.output.index("{"):])
    assert body["label"] == "unsure" and body["best_guess"] in body["probabilities"]
    assert any("not calibrated" in w for w in body["warnings"])


def test_predict_one_post_errors(sgmft_run, tmp_path):
    assert runner.invoke(app, ["predict", str(sgmft_run)]).exit_code == 2
    (tmp_path / "x.jpg").write_text("no")
    bad = runner.invoke(app, ["predict", str(sgmft_run), "--image", str(tmp_path / "x.jpg")])
    assert bad.exit_code == 1 and "not an image" in bad.output
    empty = runner.invoke(app, ["predict", str(sgmft_run), "--text", "[哈哈]"])
    assert empty.exit_code == 1 and "needs a text" in empty.output


@pytest.fixture
def mixed_manifest(demo_folder, tmp_path):
    rows = [json.loads(line) for line in (demo_folder / "manifest.jsonl").read_text().splitlines()[:4]]
    for row in with_images(rows, demo_folder, tmp_path):
        row["image"] = str(tmp_path / row["image"])
        row.pop("label")
        row.pop("user")
    rows[1]["image"] = str(tmp_path / "missing.jpg")
    rows.append({"id": "e", "text": "[哈哈]", "image": rows[0]["image"]})
    return write_jsonl(tmp_path / "posts.jsonl", rows)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_predict_manifest_bad_rows_become_errors(sgmft_run, mixed_manifest, tmp_path, suffix):
    out = tmp_path / f"pred{suffix}"
    result = runner.invoke(app, ["predict", str(sgmft_run), "--manifest", str(mixed_manifest),
                                 "--out", str(out)])
    assert result.exit_code == 3, result.output
    assert "predicted 3 posts, 2 row errors" in result.output
    if suffix == ".jsonl":
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["row"] for r in records] == [1, 2, 3, 4, 5]
        assert "missing image" in records[1]["error"] and "empty text" in records[4]["error"]
        assert records[0].get("best_guess", records[0]["label"]) in records[0]["probabilities"]
    else:
        lines = out.read_text().splitlines()
        assert lines[0].startswith("id,row,user,split,true_label,label,p_home") and len(lines) == 6
        assert "missing image" in lines[2]


def test_profile_per_user(sgmft_run, demo_folder, tmp_path):
    out = tmp_path / "profiles"
    result = runner.invoke(app, ["profile", str(sgmft_run), "--manifest",
                                 str(demo_folder / "manifest.jsonl"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "profiles.json").read_text())
    groups = {**report["groups"]}
    assert report["population"]["posts"] == 40
    assert sum(g["posts"] for g in groups.values()) + report["small_groups"]["count"] >= len(groups)
    assert "restaurant" in result.output            # long labels are not cut short
    for g in [report["population"], *groups.values()]:
        assert sum(share for share, _, _ in g["shares"].values()) == pytest.approx(1.0)
        assert all(low <= share <= high for share, low, high in g["shares"].values())
    assert (out / "profiles.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "profiles.csv").read_text().startswith("group,time,label,posts")


def test_profile_needs_users(sgmft_run, mixed_manifest, tmp_path):
    result = runner.invoke(app, ["profile", str(sgmft_run), "--manifest", str(mixed_manifest),
                                 "--out", str(tmp_path / "p")])
    assert result.exit_code == 1
    assert "--by user: the manifest has no column 'user' in its first 5 rows" in result.output


@pytest.mark.parametrize("which", ["sgmft_run", "unis_run", "fallback_run"])
def test_onnx_export_agrees_with_pytorch(which, request, tmp_path):
    import onnxruntime

    from sgmft.serving.export import ExportHead, example_inputs
    from sgmft.training.rundir import load_run

    run_dir = request.getfixturevalue(which)
    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(run_dir), "--onnx", str(out)])
    assert result.exit_code == 0, result.output
    run = load_run(run_dir)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inputs = example_inputs(run, batch=7, seed=5)
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})
    expected = [t.detach().numpy() for t in ExportHead(run.model)(*inputs)]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert np.allclose(got[0].sum(-1), 1.0, atol=1e-5)
    # the probabilities carry the run's temperature, as predict's do, and a post without its
    # image (present 1, 0) is what the predictor makes of it: the image's training mean, and
    # the mixture without the image probe
    *features, present = inputs
    batch = dict(zip(names, features, strict=False))
    if "image" in batch:
        batch["image"] = torch.where(present[:, 1:] > 0, batch["image"], run.model.probes.image_mean)
    if "text" in batch:
        batch["text"] = torch.where(present[:, :1] > 0, batch["text"], run.model.probes.text_mean)
    if "tokens" in batch:
        batch["tokens"] = torch.where(present[:, :1] > 0, batch["tokens"], 0)
    if "image_tokens" in batch:
        keep = present[:, 1, None, None] > 0
        batch["image_tokens"] = torch.where(keep, batch["image_tokens"], run.model.inputs.image_stats.mean)
    if "text_tokens" in batch:
        keep = present[:, 0, None, None] > 0
        batch["text_tokens"] = torch.where(keep, batch["text_tokens"], run.model.inputs.text_stats.mean)
    logits = run.model({**batch, "present": present > 0}).logits
    np.testing.assert_allclose(got[0], torch.softmax(logits, -1).detach().numpy(), atol=1e-5)
    assert names[-1] == "present" and present[1].tolist() == [1.0, 0.0]
    assert float(run.model.temperature) == pytest.approx(run.info.get("temperature", 1.0))


def test_an_export_that_fails_its_check_leaves_no_file(sgmft_run, tmp_path, monkeypatch):
    from sgmft.serving import export

    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    monkeypatch.setattr(export, "compare", lambda *args, **kwargs: {"probabilities": 0.5})
    result = runner.invoke(app, ["export", str(sgmft_run), "--onnx", str(out)])
    assert result.exit_code == 1 and "disagree" in result.output
    assert out.read_bytes() == b"an earlier export" and not list(tmp_path.glob(".model.onnx*"))


def test_predict_gives_sets_unsure_answers_and_json_arrays(fallback_run, demo_folder, tmp_path):
    image = str(demo_folder / "images" / "restaurant-001.jpg")
    one = runner.invoke(app, ["predict", str(fallback_run), "--text", "周末和朋友去吃火锅", "--image", image,
                              "--coverage", "0.9", "--min-confidence", "0.999999"])
    assert one.exit_code == 0, one.output
    assert "label: unsure (best guess" in one.output and "set (90% coverage)" in one.output
    out, manifest = tmp_path / "p.json", str(demo_folder / "manifest.jsonl")
    many = runner.invoke(app, ["predict", str(fallback_run), "--manifest", manifest, "--out", str(out),
                               "--coverage", "0.9"])
    assert many.exit_code == 0, many.output
    records = json.loads(out.read_text())
    assert isinstance(records, list) and len(records) == 40 and all("set" in r for r in records)
    csv_out = tmp_path / "p.csv"
    runner.invoke(app, ["predict", str(fallback_run), "--manifest", manifest, "--out", str(csv_out),
                        "--coverage", "0.9"])
    header = csv_out.read_text().splitlines()[0]
    assert ",set,best_guess,novelty_text,novelty_image,unlike_training,error" in header
    refused = runner.invoke(app, ["predict", str(fallback_run), "--manifest", manifest, "--out",
                                  str(tmp_path / "p.txt")])
    assert refused.exit_code == 1 and ".jsonl, .json, .csv, .parquet" in refused.output


def test_sequence_reading_end_to_end(demo_folder, tmp_path):
    """Extract token sequences, train with model.reading=sequence, predict, export to ONNX."""
    out = tmp_path / "seq-run"
    result = runner.invoke(app, ["train", "--data", str(demo_folder / "manifest.jsonl"),
                                 "--cache", str(tmp_path / "seq-features"), "--out", str(out),
                                 "--config", "fast", "--set", "model.reading=sequence",
                                 "--set", "model.seq_length=4", "--set", "model.dim=16",
                                 "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert info["features"]["token_shapes"] == {"text": [1, 512], "image": [49, 1280]}
    predicted = runner.invoke(app, ["predict", str(out), "--text", "去健身房", "--image",
                                    str(demo_folder / "images" / "gym-000.jpg"), "--json"])
    assert predicted.exit_code == 0, predicted.output
    exported = runner.invoke(app, ["export", str(out), "--onnx", str(tmp_path / "seq.onnx")])
    assert exported.exit_code == 0, exported.output


def test_evaluate_reports_sets_by_label_with_their_coverage(fallback_run):
    result = runner.invoke(app, ["evaluate", str(fallback_run), "--sets-by", "label", "--no-figures"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((fallback_run / "eval" / "metrics.json").read_text())
    by = metrics["sets_by"]
    assert by["by"] == "label" and sum(row["posts"] for row in by["per_group"].values()) == metrics["n"]
    assert "sets by label" in result.output
