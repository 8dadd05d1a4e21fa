"""Calibration scores against hand-computed cases, the ECE floor, temperature scaling,
conformal sets and the Wilson interval."""

import math

import numpy as np
import pytest

from sgmft.decision.temperature import fit_temperature
from sgmft.metrics.calibration import brier, ece, ece_floor, log_loss, reliability, softmax
from sgmft.metrics.conformal import lac_threshold, prediction_sets, set_coverage, threshold_from_scores
from sgmft.metrics.intervals import wilson


def test_scores_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 0])
    assert log_loss(probs, labels) == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.7, 0.2])))
    assert brier(probs, labels) == pytest.approx(np.mean([0.02, 0.72, 0.18, 1.28]))
    # confidences 0.9, 0.6, 0.7, 0.8 fall in four bins of 15; right: yes, no, yes, no
    assert ece(probs, labels) == pytest.approx((0.1 + 0.6 + 0.3 + 0.8) / 4)
    bins = reliability(probs, labels)
    assert [b["n"] for b in bins] == [1, 1, 1, 1] and bins[0]["accuracy"] == 0.0
    assert ece(probs, labels, bins=1) == pytest.approx(abs(0.5 - 0.75))


def test_a_calibrated_model_sits_within_its_floor_and_an_overconfident_one_does_not():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 800)
    labels = (rng.random(800) >= confidence).astype(int)       # right (class 0) with p = confidence
    probs = np.stack([confidence, 1 - confidence], 1)
    floor = ece_floor(confidence, draws=500)
    assert 0 < floor["mean"] < floor["p95"] < 0.08
    assert ece(probs, labels) <= floor["p95"]
    sharp = softmax(np.log(probs) * 4)                          # the same predictions, overconfident
    assert ece(sharp, labels) > ece_floor(sharp.max(1), draws=500)["p95"]


def test_the_floor_quotes_a_median_never_above_its_95th_percentile_where_the_mean_passes_it():
    # 9 posts at 0.997: a test set has a miss with probability 1 - 0.997**9 = 2.7 %, and a miss
    # costs about 1/9; the mean (0.003 + 0.027 * 0.11 = 0.006) passes the 95th percentile (0.003)
    floor = ece_floor(np.full(9, 0.997), draws=2000)
    assert floor["median"] == pytest.approx(0.003, abs=1e-9) == floor["p95"]
    assert floor["mean"] == pytest.approx(0.006, abs=0.0015)
    assert floor["median"] <= floor["p95"] < floor["mean"]


def test_temperature_undoes_a_known_sharpening_and_keeps_the_argmax():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3000, 4)) * 2
    labels = np.array([rng.choice(4, p=p) for p in softmax(logits)])
    t = fit_temperature(logits * 3, labels)                     # 3x too sharp: T near 3
    assert t == pytest.approx(3.0, rel=0.1)
    assert log_loss(softmax(logits * 3 / t), labels) < log_loss(softmax(logits * 3), labels)
    assert fit_temperature(logits, labels[:0]) == 1.0


def test_conformal_sets_cover_as_promised():
    """Calibrate on half, test on the other half, many times: coverage >= the target on
    average, and the threshold follows the (n + 1) correction."""
    rng = np.random.default_rng(2)
    covered = []
    for _ in range(200):
        logits = rng.normal(size=(400, 5))
        probs = softmax(logits)
        labels = np.array([rng.choice(5, p=p) for p in probs])
        q = lac_threshold(probs[:200], labels[:200], 0.9)
        covered.append(set_coverage(prediction_sets(probs[200:], q), labels[200:])["coverage"])
    assert np.mean(covered) >= 0.9 - 0.005
    scores = np.arange(1, 10) / 10                               # n = 9
    assert threshold_from_scores(scores, 0.8) == pytest.approx(0.8)   # ceil(10 * 0.8) / 9 -> the 8th
    assert threshold_from_scores(scores[:3], 0.9) == 1.0        # too few to promise 90 %: every label
    sets = prediction_sets(np.array([[0.5, 0.3, 0.2]]), 0.01)   # nothing reaches 0.99: the top label
    assert sets.tolist() == [[True, False, False]]
    with pytest.raises(ValueError):
        lac_threshold(probs, labels, 1.0)


def test_wilson_by_hand():
    low, high = wilson(8, 10)
    z = 1.959964
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / (1 + z * z / 10)
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert wilson(0, 0) == (0.0, 1.0) and wilson(5, 5)[1] == 1.0


def test_the_temperature_of_folds_holds_on_the_worst_fold():
    """Fold 0 is well calibrated at T = 1, fold 1 is 3x too sharp: pooled, the temperature
    follows the larger fold 0; over folds, it softens enough for fold 1 too."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2000, 3)) * 2
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits)])
    groups = np.repeat([0, 1], [1800, 200])
    shown = logits.copy()
    shown[groups == 1] *= 3
    pooled, worst = fit_temperature(shown, labels), fit_temperature(shown, labels, groups)
    assert pooled < worst
    fold1 = groups == 1
    assert log_loss(softmax(shown[fold1] / worst), labels[fold1]) < log_loss(softmax(shown[fold1] / pooled),
                                                                                 labels[fold1])


def test_the_decided_label_lies_in_its_set():
    # the review's case: the balanced offsets (0.7 on label 1) decide 1, the set of q = 0.6 is {0}
    import torch

    from sgmft.metrics.conformal import prediction_sets

    probs = np.array([[0.55, 0.30, 0.15]])
    decided = (torch.log(torch.tensor(probs)) + torch.tensor([0.0, 0.7, 0.0])).argmax(-1).numpy()
    assert decided.tolist() == [1]
    assert prediction_sets(probs, 0.6).tolist() == [[True, False, False]]
    assert prediction_sets(probs, 0.6, decided).tolist() == [[True, True, False]]


def test_mondrian_thresholds_and_class_conditional_sets_by_hand():
    from sgmft.metrics.conformal import class_conditional_sets, mondrian_thresholds

    # group a: scores 0.1..0.9 (9 posts): at 80 %, k = ceil(10 * 0.8) = 8 -> 0.8; group b: 2 posts
    scores = [*np.linspace(0.1, 0.9, 9), 0.2, 0.3]
    groups = ["a"] * 9 + ["b"] * 2
    assert mondrian_thresholds(np.asarray(scores), groups, 0.8) == pytest.approx({"a": 0.8, "b": 1.0})
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.15, 0.75]])
    sets = class_conditional_sets(probs, np.array([0.6, 0.7, 0.1]))
    # class 0 enters at p >= 0.4, class 1 at p >= 0.3, class 2 at p >= 0.9; the top label always
    assert sets.tolist() == [[True, True, False], [False, False, True]]


def test_a_five_post_fold_does_not_decide_the_temperature_for_eight_hundred():
    # the review's case: one confident miss in a 5-post fold moved T from 1.00 to 2.89
    from sgmft.decision.temperature import counted_folds, fit_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(805, 3)) * 2
    labels = np.array([rng.choice(3, p=p) for p in np.exp(logits) / np.exp(logits).sum(1, keepdims=True)])
    logits[800] = [8.0, -8.0, -8.0]                      # a confident miss in the small fold
    labels[800] = 1
    fold = np.r_[np.repeat([0, 1, 2, 3], 200), np.full(5, 4)]
    assert [int(part.sum()) for part in counted_folds(fold)] == [200, 200, 200, 200]
    assert fit_temperature(logits, labels, fold) == pytest.approx(1.0, abs=0.15)
    every = fit_temperature(logits[800:], labels[800:])               # the small fold alone: softens a lot
    assert every > 1.5
    assert len(counted_folds(np.repeat([0, 1], [4, 2]))) == 2          # none large enough: all count
