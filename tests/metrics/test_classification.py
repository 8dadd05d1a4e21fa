import numpy as np
import pytest

from sgmft.evaluation.plots import plot_confusion, plot_tsne_panels
from sgmft.metrics.classification import classification_metrics


def test_metrics_hand_computed():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_absent_class_scores_zero_not_nan():
    m = classification_metrics(np.array([0, 0]), np.array([0, 0]), ["a", "b"])
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_figures_are_png(tmp_path):
    plot_confusion(np.array([[3, 1], [0, 4]]), ["a", "b"], tmp_path / "c.png")
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (10, 5)), rng.normal(5, 1, (10, 5))])
    plot_tsne_panels([("x", features, np.repeat([0, 1], 10))], ["a", "b"], tmp_path / "t.png")
    for name in ("c.png", "t.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
