"""Prediction sets in the evaluation: calibrated on the run's held-out calibration posts, the
decided label inside, and group-conditional (Mondrian) sets with the coverage of each group."""

import numpy as np
import pytest

from sgmft.evaluation.report import mondrian_report


def test_mondrian_by_a_column_uses_each_group_s_threshold_and_the_pooled_one_for_new_groups():
    scores = np.linspace(0.05, 0.95, 19)
    calibration = [{"id": f"c{i}", "label": "a", "score": s} for i, s in enumerate(scores)]
    values = ["x"] * 10 + ["y"] * 9
    probs = np.array([[0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    labels = np.array([0, 1, 0])
    report = mondrian_report(probs, labels, probs.argmax(1), ["a", "b"], ["x", "y", "z"], calibration,
                             values, "event", 0.8)
    table = report["per_group"]
    assert set(table) == {"x", "y", "z"} and table["z"]["calibration_posts"] == 0
    assert report["posts_of_groups_without_calibration"] == 1
    assert table["x"]["threshold"] == pytest.approx(scores[8])       # ceil(11 * 0.8) = the 9th of x's 10
    assert 0.0 <= report["coverage"] <= 1.0 and report["mean_size"] >= 1.0
