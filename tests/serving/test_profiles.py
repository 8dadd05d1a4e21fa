"""`sgmft profile` end to end on the demo's planted habits: shares by user and by hour with
intervals that hold the planted shares, the population first, small groups apart, bad times as
row errors, and the page's profile view."""

import collections
import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from sgmft.cli import app
from sgmft.data.demo import HABITS, make_demo
from sgmft.training.config import resolve_config
from sgmft.training.run import train_run

runner = CliRunner()


@pytest.fixture(scope="module")
def habits(tmp_path_factory) -> tuple[Path, Path]:
    """The demo (20 posts a label) and a run of the recommended preset on 3 folds (about a minute)."""
    folder = tmp_path_factory.mktemp("habits")
    make_demo(folder, posts_per_class=20)
    config = resolve_config(
        "sgmft", [f"data.manifest={folder / 'manifest.jsonl'}", "train.folds=3", "train.epochs=20"]
    )
    return folder / "manifest.jsonl", train_run(config, folder / "run", progress=False)


def _profile(run: Path, manifest: Path, out: Path, *options: str, status: int = 0):
    result = runner.invoke(
        app, ["profile", str(run), "--manifest", str(manifest), "--out", str(out), *options]
    )
    assert result.exit_code == status, result.output
    return result


def test_planted_habits_are_recovered_within_their_intervals(habits, tmp_path):
    manifest, run = habits
    out = tmp_path / "p"
    result = _profile(run, manifest, out, "--time", "time", "--every", "hour", "--min-posts", "10")
    assert "estimated shares" in result.output and "listed apart" in result.output
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    report = json.loads((out / "profiles.json").read_text())
    assert report["method_choice"]["asked"] == "auto" and report["method"] in ("pcc", "pacc")
    assert report["population"]["posts"] == len(rows)
    saved = json.loads((run / "rates.json").read_text())
    units = len(set(saved["units"]))
    assert len(saved["units"]) == len(saved["true"]) and units >= 2
    # no shift from the training posts, too few held-out groups to earn a margin: not widened
    assert report["intervals"] == {"margin": 0.0, "units": units, "how": report["intervals"]["how"]}
    assert "no shift detected" in report["intervals"]["how"]
    inside = total = 0
    for user, habit in HABITS.items():
        labels = collections.Counter(r["label"] for r in rows if r["user"] == user)
        posts = sum(labels.values())
        shares = report["groups"][user]["shares"]
        top = sorted(shares, key=lambda label: -shares[label][0])[: len(habit)]
        assert set(top) == set(habit), (user, shares)  # the habits stand out
        for label, (_, low, high) in shares.items():
            inside += low - 1e-9 <= labels.get(label, 0) / posts <= high + 1e-9
            total += 1
    assert inside >= 0.9 * total, (inside, total)
    with duckdb.connect() as db:
        columns = [
            d[0] for d in db.execute(f"SELECT * FROM read_parquet('{out / 'profiles.parquet'}')").description
        ]
        gym = db.execute(
            f"SELECT \"time\", share FROM read_parquet('{out / 'profiles.parquet'}') WHERE "
            "\"group\" = 'early_bird' AND label = 'gym' AND \"time\" IS NOT NULL "
            "ORDER BY share DESC LIMIT 1"
        ).fetchone()
        shares = db.execute(
            f'SELECT "group", "time", sum(share) FROM read_parquet(\'{out / "profiles.parquet"}\') '
            "GROUP BY ALL"
        ).fetchall()
    assert columns[:8] == ["group", "time", "label", "posts", "unsure", "share", "low", "high"]
    assert gym[0] in ("06", "07")  # the early bird is at the gym at 6 or 7
    assert all(abs(total - 1) < 1e-6 for _, _, total in shares)
    assert (out / "profiles.png").stat().st_size and (out / "profiles-time.png").stat().st_size
    assert "group,time,label" in (out / "profiles.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("method", ["cc", "pcc", "acc", "pacc", "emq"])
def test_every_method_profiles_by_any_column(habits, tmp_path, method):
    manifest, run = habits
    rows = [
        json.loads(line) | {"city": "north" if i % 3 else "south"}
        for i, line in enumerate(manifest.read_text().splitlines())
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    _profile(
        run,
        path,
        tmp_path / "p",
        "--by",
        "city",
        "--method",
        method,
        "--time",
        "time",
        "--every",
        "weekday",
        "--image-root",
        str(manifest.parent),
    )
    report = json.loads((tmp_path / "p" / "profiles.json").read_text())
    assert report["method"] == method and set(report["groups"]) == {"north", "south"}
    assert sum(report["groups"][g]["posts"] for g in report["groups"]) == len(rows)
    assert all(
        k.split("-")[1] in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
        for k in report["population_by_time"]
    )


def test_a_bad_time_is_a_row_error_and_options_are_checked(habits, tmp_path):
    manifest, run = habits
    rows = [json.loads(line) for line in manifest.read_text().splitlines()[:12]]
    rows[3]["when"] = "yesterday"
    for r in rows:
        r.setdefault("when", r["time"])
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    result = _profile(
        run,
        path,
        tmp_path / "p",
        "--time",
        "when",
        "--every",
        "month",
        "--min-posts",
        "1",
        "--image-root",
        str(manifest.parent),
        status=3,
    )
    assert "left out: 1 row that" in result.output
    report = json.loads((tmp_path / "p" / "profiles.json").read_text())
    assert report["row_errors"] == 1 and "bad time 'yesterday'" in report["errors"][0]["error"]
    import pyarrow.parquet as pq

    every = pq.read_table(tmp_path / "p" / report["errors_file"]).to_pylist()   # all of them, streamed
    assert [(e["row"], e["id"]) for e in every] == [(4, rows[3]["id"])] and "yesterday" in every[0]["error"]
    assert list(report["population_by_time"]) == ["2026-03"]
    missing = runner.invoke(app, ["profile", str(run), "--manifest", str(path), "--every", "hour"])
    assert missing.exit_code == 2 and "--every needs --time" in missing.output
    wrong = runner.invoke(app, ["profile", str(run), "--manifest", str(path), "--method", "median"])
    assert wrong.exit_code == 2 and "expected one of" in wrong.output


def test_the_page_shows_the_last_profile(habits, tmp_path):
    from fastapi.testclient import TestClient

    from sgmft.serving.app import create_app

    manifest, run = habits
    (run / "last_profile.json").unlink(missing_ok=True)
    with TestClient(create_app(run=run)) as client:
        assert client.get("/profile").status_code == 404
        _profile(run, manifest, tmp_path / "p", "--time", "time", "--every", "hour")
        found = client.get("/profile")
        assert found.status_code == 200 and found.json()["population"]["posts"] > 0
        assert found.json()["figures"] == ["profiles.png", "profiles-time.png"]
        figure = client.get("/profile/profiles.png")
        assert figure.status_code == 200 and figure.content[:4] == b"\x89PNG"
        assert client.get("/profile/..%2Frun.json").status_code == 404
        assert 'id="profile"' in client.get("/").text


def test_every_row_error_is_streamed_to_a_file_and_the_first_are_listed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sgmft.serving.profiles import ERRORS_FILE, row_errors

    rows = list(range(2500, 0, -1))
    table = pa.table({"id": [f"p{r}" for r in rows], "row": rows, "user": ["u"] * 2500,
                      "true_label": [None] * 2500, "error": [None if r % 2 else f"bad {r}" for r in rows]})
    pq.write_table(table, tmp_path / "predictions.parquet")
    count, first = row_errors(tmp_path / "predictions.parquet", tmp_path, limit=10)
    assert count == 1250 and [e["row"] for e in first] == list(range(2, 21, 2))
    every = pq.read_table(tmp_path / ERRORS_FILE).column("row").to_pylist()
    assert every == list(range(2, 2501, 2))
    pq.write_table(table.filter(pa.compute.is_null(table["error"])), tmp_path / "predictions.parquet")
    assert row_errors(tmp_path / "predictions.parquet", tmp_path) == (0, [])
    assert not (tmp_path / ERRORS_FILE).exists()
