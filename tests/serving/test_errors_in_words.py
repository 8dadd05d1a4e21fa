"""What a user sees when something is wrong: one line in words and a documented exit status,
never a traceback (`predict` and `profile` on the shared tiny run)."""

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sgmft.cli import app
from sgmft.cli.common import NOTHING_DONE, ROWS_FAILED
from tests.conftest import write_jsonl

runner = CliRunner()


def rows(demo_folder: Path, n: int = 6) -> list[dict]:
    lines = (demo_folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(line) for line in lines]


def one_line_error(result, *words: str) -> None:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in errors[0], errors[0]


@pytest.mark.parametrize(
    "case, words",
    [
        ("manifest is a folder", ("is not a regular file", "a folder")),
        ("no manifest", ("manifest not found",)),
        ("no run", ("run", "not found")),
        ("out .txt", ("--out", "extension", ".jsonl")),
        ("out is a folder", ("--out", "is a folder")),
    ],
)
def test_predict_path_mistakes_are_one_line_each(case, words, sgmft_run, demo_folder, tmp_path):
    manifest = write_jsonl(demo_folder / "three.jsonl", rows(demo_folder, 3))
    (tmp_path / "adir").mkdir()
    run, out = str(sgmft_run), str(tmp_path / "p.jsonl")
    if case == "manifest is a folder":
        manifest = tmp_path / "adir"
    elif case == "no manifest":
        manifest = tmp_path / "nosuch.jsonl"
    elif case == "no run":
        run = str(tmp_path / "nosuch")
    elif case == "out .txt":
        out = str(tmp_path / "x.txt")
    else:
        out = str(tmp_path / "adir")
    result = runner.invoke(app, ["predict", run, "--manifest", str(manifest), "--out", out])
    assert result.exit_code == 1
    one_line_error(result, *words)


def test_exit_status_says_whether_some_or_no_rows_were_predicted(sgmft_run, demo_folder, tmp_path):
    good = rows(demo_folder, 4)
    mixed = write_jsonl(demo_folder / "mixed.jsonl", [*good, {"id": "x", "text": "", "image": "nope.jpg"}])
    out = tmp_path / "p.jsonl"
    assert (
        runner.invoke(app, ["predict", str(sgmft_run), "--manifest", str(mixed), "--out", str(out)]).exit_code
        == ROWS_FAILED
    )
    skipped = runner.invoke(
        app, ["predict", str(sgmft_run), "--manifest", str(mixed), "--out", str(out), "--skip-invalid"]
    )
    assert skipped.exit_code == 0, skipped.output
    empty = demo_folder / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    for extra in ([], ["--skip-invalid"]):
        result = runner.invoke(
            app, ["predict", str(sgmft_run), "--manifest", str(empty), "--out", str(out), *extra]
        )
        assert result.exit_code == NOTHING_DONE
        one_line_error(result, "no post")
    validate = runner.invoke(app, ["validate", str(mixed)])
    assert validate.exit_code == ROWS_FAILED
    assert runner.invoke(app, ["validate", str(empty)]).exit_code == NOTHING_DONE
    profile = runner.invoke(
        app,
        [
            "profile",
            str(sgmft_run),
            "--manifest",
            str(mixed),
            "--out",
            str(tmp_path / "prof"),
            "--method",
            "pcc",
        ],
    )
    assert profile.exit_code == ROWS_FAILED, profile.output


def test_profile_names_a_missing_by_column_before_predicting(sgmft_run, demo_folder, tmp_path):
    plain = write_jsonl(
        demo_folder / "nouser.jsonl", [{k: v for k, v in r.items() if k != "user"} for r in rows(demo_folder)]
    )
    result = runner.invoke(
        app, ["profile", str(sgmft_run), "--manifest", str(plain), "--out", str(tmp_path / "prof")]
    )
    assert result.exit_code == 1
    one_line_error(result, "--by user", "no column 'user'")
    assert "predict:" not in result.output and not (tmp_path / "prof" / "predictions.parquet").exists()


def test_image_paths_stay_inside_the_image_root(sgmft_run, demo_folder, tmp_path):
    good = rows(demo_folder, 4)
    inside = str((demo_folder / good[2]["image"]).resolve())
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes((demo_folder / good[3]["image"]).read_bytes())
    (demo_folder / "link.jpg").unlink(missing_ok=True)
    (demo_folder / "link.jpg").symlink_to(outside)
    evil = [
        {**good[0], "image": "../../../../etc/passwd"},
        {**good[1], "image": str(outside)},
        {**good[2], "image": inside},
        {**good[3], "image": "link.jpg"},
    ]
    manifest = write_jsonl(demo_folder / "evil.jsonl", evil)
    out = tmp_path / "p.jsonl"
    result = runner.invoke(app, ["predict", str(sgmft_run), "--manifest", str(manifest), "--out", str(out)])
    assert result.exit_code == ROWS_FAILED, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert ["error" in r for r in records] == [True, True, False, True]
    assert all("outside the image root" in r["error"] for r in records if "error" in r)
    allowed = runner.invoke(
        app,
        ["predict", str(sgmft_run), "--manifest", str(manifest), "--out", str(out), "--allow-outside-root"],
    )
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert allowed.exit_code == ROWS_FAILED and ["error" in r for r in records] == [True, False, False, False]
    assert "not an image" in records[0]["error"]  # /etc/passwd opened, as asked, and refused


def test_a_post_without_an_image_is_predicted_from_its_text(sgmft_run, demo_folder, tmp_path):
    good = rows(demo_folder, 3)
    manifest = write_jsonl(
        demo_folder / "textonly.jsonl",
        [{**good[0], "image": ""}, {k: v for k, v in good[1].items() if k != "image"}, good[2]],
    )
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(sgmft_run), "--manifest", str(manifest), "--out", str(out)])
    assert result.exit_code == 0, result.output
    import csv

    with open(out, encoding="utf-8", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["error"] for r in table] == ["", "", ""] and all(r["label"] for r in table)
    assert "no image" in table[0]["warnings"] and "no image" not in table[2]["warnings"]
    validate = runner.invoke(app, ["validate", str(manifest)])
    assert validate.exit_code == 0 and "2 of the posts text-only" in validate.output


def test_a_write_that_fails_is_one_line_that_says_what_is_kept(sgmft_run, demo_folder, tmp_path):
    manifest = write_jsonl(demo_folder / "twenty.jsonl", rows(demo_folder, 20))
    out = tmp_path / "p.jsonl"
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))\n"
        "from sgmft.cli import main\n"
        "sys.argv = ['sgmft', 'predict', sys.argv[1], '--manifest', sys.argv[2], '--out', sys.argv[3],\n"
        "            '--block-rows', '4']\n"
        "main()\n"
    )
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[1] == resource.RLIM_INFINITY
    done = subprocess.run(
        [sys.executable, "-c", script, str(sgmft_run), str(manifest), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "file-size limit" in error[0] and "--resume" in error[0], done.stderr
    progress = json.loads((tmp_path / "p.jsonl.progress.json").read_text(encoding="utf-8"))
    assert progress["rows_done"] >= 4 and f"first {progress['rows_done']} rows" in error[0]
    resumed = runner.invoke(
        app,
        [
            "predict",
            str(sgmft_run),
            "--manifest",
            str(manifest),
            "--out",
            str(out),
            "--resume",
            "--block-rows",
            "4",
        ],
    )
    assert resumed.exit_code == 0, resumed.output
    assert [json.loads(line)["row"] for line in out.read_text(encoding="utf-8").splitlines()] == list(
        range(1, 21)
    )


def test_an_output_folder_that_cannot_be_written_is_one_line(sgmft_run, demo_folder, tmp_path):
    manifest = write_jsonl(demo_folder / "three.jsonl", rows(demo_folder, 3))
    result = runner.invoke(app, ["predict", str(sgmft_run), "--manifest", str(manifest), "--out",
                                 "/sys/sgmft-test.jsonl"])
    assert result.exit_code == 1
    one_line_error(result, "cannot write")
