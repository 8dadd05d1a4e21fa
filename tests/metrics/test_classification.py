import numpy as np
import pytest

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


def test_macro_f1_is_over_the_labels_with_posts():
    """A 4-label test set of an 8-label run: perfect predictions score macro-F1 1, not 0.5."""
    y = np.array([0, 1, 2, 3, 0, 1])
    m = classification_metrics(y, y, [f"l{i}" for i in range(8)])
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    assert m["macro_f1_labels"] == ["l0", "l1", "l2", "l3"]
    # a prediction into a label without posts still costs the true label's recall
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 5, 1, 1]), [f"l{i}" for i in range(8)])
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
