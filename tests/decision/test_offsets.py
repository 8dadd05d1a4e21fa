"""Balanced decisions by hand: an offset that finds the rare label at no cost in accuracy is
taken; one that costs more accuracy than the tolerance is not."""

import numpy as np
import pytest

from sgmft.decision.offsets import balanced_offsets


def test_an_offset_finds_the_rare_label_when_accuracy_allows():
    # label 1 is never the argmax, but twice the truth with p = 0.45 against 0.55
    probs = np.array([[0.9, 0.1]] * 8 + [[0.55, 0.45]] * 2)
    labels = np.array([0] * 8 + [1] * 2)
    offsets, record = balanced_offsets(probs, labels)
    assert offsets[0] == 0.0 and 0.0 < offsets[1] <= np.log(0.9 / 0.1)   # enough for 0.45, not for 0.1
    assert record["accuracy_before"] == pytest.approx(0.8) and record["accuracy_after"] == 1.0
    assert record["macro_f1_after"] == 1.0 > record["macro_f1_before"]


def test_an_offset_that_costs_accuracy_is_refused():
    # moving to label 1 would win one post of it and lose two of label 0: accuracy falls by 0.1
    probs = np.array([[0.6, 0.4]] * 3 + [[0.9, 0.1]] * 7)
    labels = np.array([1, 0, 0] + [0] * 7)
    offsets, record = balanced_offsets(probs, labels)
    assert offsets.tolist() == [0.0, 0.0] and record["accuracy_after"] == record["accuracy_before"]
