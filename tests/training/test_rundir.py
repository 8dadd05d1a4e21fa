"""The calibration posts a run keeps for its prediction sets: an Arrow file read in place, and
the JSON of runs written before it still read."""

import json

import numpy as np

from sgmft.training.rundir import CONFORMAL, CONFORMAL_POSTS, read_conformal_posts, write_conformal_scores

POSTS = [{"id": f"p{i}", "label": "home" if i % 2 else "gym", "score": s, "score_text_only": s / 2,
          "score_image_only": 1 - s, "probabilities": [s, 1 - s]} for i, s in enumerate([0.4, 0.1, 0.3])]


def test_the_calibration_posts_are_a_count_in_json_and_columns_in_arrow(tmp_path):
    record = write_conformal_scores(tmp_path, POSTS, shift_like=True)
    assert record["posts"] == 3 and record["shift_like"] is True
    saved = json.loads((tmp_path / CONFORMAL).read_text())
    assert saved == {"shift_like": True, "posts": 3, "file": CONFORMAL_POSTS}
    table = read_conformal_posts(tmp_path, saved)
    assert table.column("id").to_pylist() == ["p0", "p1", "p2"]
    assert table.column("label").to_pylist() == ["gym", "home", "gym"]
    assert np.allclose(table.column("score_text_only").to_numpy(), [0.2, 0.05, 0.15])
    assert "probabilities" not in table.column_names          # those are rates.json's
    # none: both files go (a run trained again without a calibration part)
    assert write_conformal_scores(tmp_path, [])["posts"] == 0
    assert not (tmp_path / CONFORMAL).exists() and not (tmp_path / CONFORMAL_POSTS).exists()


def test_a_run_written_before_the_arrow_file_is_read_from_its_json(tmp_path):
    old = [{k: v for k, v in post.items() if k in ("id", "label", "score")} for post in POSTS]
    record = {"scores": sorted(p["score"] for p in old), "shift_like": None, "posts": old}
    table = read_conformal_posts(tmp_path, record)
    assert table.column("score").to_pylist() == [0.4, 0.1, 0.3]
    assert table.column("score_image_only").to_pylist() == [0.4, 0.1, 0.3]   # scored as they are only
