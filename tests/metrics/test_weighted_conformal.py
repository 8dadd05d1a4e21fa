"""Weighted split-conformal sets: equal weights are plain split conformal, a hand-computed case,
no calibration mass gives every label, and under a planted covariate shift the weighted sets
cover while the plain ones do not."""

import numpy as np
import pytest
from scipy.stats import norm

from sgmft.metrics.conformal import (
    sets_of_thresholds,
    threshold_from_scores,
    weighted_thresholds,
)


@pytest.mark.parametrize("n", [1, 5, 19, 100])
@pytest.mark.parametrize("coverage", [0.5, 0.8, 0.9])
def test_equal_weights_are_plain_split_conformal(n, coverage):
    scores = np.random.default_rng(n).random(n)
    got = weighted_thresholds(scores, np.ones(n), np.ones(3), coverage)
    assert got.tolist() == [threshold_from_scores(scores, coverage)] * 3


def test_a_hand_computed_weighted_quantile():
    scores = np.array([0.1, 0.2, 0.3, 0.4])
    weights = np.array([1.0, 1.0, 1.0, 5.0])
    # test weight 2: total 10; coverage 0.7 needs 7 of mass: 1 + 1 + 1 (3) then + 5 (8) -> 0.4
    # test weight 0.1: total 8.1; 0.3 * ... : coverage 0.3 needs 2.43: 1, 2, 3 -> 0.3
    got = weighted_thresholds(scores, weights, np.array([2.0, 0.1]), coverage=0.7)
    assert got[0] == pytest.approx(0.4)
    assert weighted_thresholds(scores, weights, np.array([0.1]), coverage=0.3)[0] == pytest.approx(0.3)


def test_no_calibration_mass_gives_every_label():
    got = weighted_thresholds(np.array([0.1, 0.2]), np.array([1e-9, 1e-9]), np.array([1.0]), coverage=0.9)
    assert got[0] == 1.0
    sets = sets_of_thresholds(np.array([[0.9, 0.05, 0.05]]), got)
    assert sets.all()


def test_under_a_planted_covariate_shift_weighted_sets_cover_and_plain_ones_do_not():
    # x ~ N(0, 1) to calibrate, N(1.5, 1) to test; the label is noisier for large x, so a model
    # trained where x is small is overconfident where the test posts are
    rng = np.random.default_rng(0)

    def posts(n, mean):
        x = rng.normal(mean, 1, n)
        flip = rng.random(n) < np.clip(0.05 + 0.2 * np.maximum(x, 0), 0, 0.45)
        label = (x > 0).astype(int) ^ flip
        p1 = 1 / (1 + np.exp(-4 * x))  # the model: sure, as if noise were small
        return x, label, np.stack([1 - p1, p1], 1)

    def ratio(x):  # the true density ratio q / p
        return norm.pdf(x, 1.5, 1) / norm.pdf(x, 0, 1)

    coverage, plain, weighted = 0.9, [], []
    for _ in range(20):
        x_cal, y_cal, p_cal = posts(500, 0.0)
        x_test, y_test, p_test = posts(500, 1.5)
        scores = 1 - p_cal[np.arange(500), y_cal]
        q = threshold_from_scores(scores, coverage)
        plain.append(sets_of_thresholds(p_test, np.full(500, q))[np.arange(500), y_test].mean())
        thresholds = weighted_thresholds(scores, ratio(x_cal), ratio(x_test), coverage)
        weighted.append(sets_of_thresholds(p_test, thresholds)[np.arange(500), y_test].mean())
    assert np.mean(plain) < coverage - 0.05
    assert np.mean(weighted) >= coverage - 0.02


def test_estimated_weights_keep_the_rate_on_exchangeable_posts():
    # the density ratios come from the domain classifier (sgmft.decision.drift); on posts drawn as
    # the calibration posts were they hover around 1, and the sets cover at their nominal rate
    from sgmft.decision.drift import density_ratios
    from sgmft.decision.novelty import fit_novelty

    rng = np.random.default_rng(1)
    covered, sizes, detected = [], [], []
    for _ in range(12):
        def posts(n):
            x = rng.normal(0, 1, (n, 6)) + 2
            label = (x[:, 0] + rng.normal(0, 1, n) > 2).astype(int)
            p1 = 1 / (1 + np.exp(-2 * (x[:, 0] - 2)))
            features = {"text": x, "image": x[:, ::-1] + rng.normal(0, 0.1, (n, 6))}
            return features, label, np.stack([1 - p1, p1], 1)

        train, _, _ = posts(400)
        held, y_held, p_held = posts(300)
        index = fit_novelty(lambda name, rows, train=train: train[name][rows], 400, held)
        test, y_test, p_test = posts(300)
        w_cal, w_test, shift = density_ratios(index, index.reduced(test))
        detected.append(shift.detected)
        thresholds = weighted_thresholds(1 - p_held[np.arange(300), y_held], w_cal, w_test, 0.9)
        sets = sets_of_thresholds(p_test, thresholds)
        covered.append(sets[np.arange(300), y_test].mean())
        sizes.append(sets.sum(1).mean())
    # 12 x 300 posts: the binomial noise of the mean is about 0.005, the calibration's about 0.01
    assert 0.87 <= np.mean(covered) <= 0.95
    assert np.mean(sizes) < 2.0 and sum(detected) <= 2      # no shift: weights of 1, nearly always


def test_estimated_weights_detect_a_planted_shift_and_cover_where_plain_sets_do_not():
    from sgmft.decision.drift import density_ratios
    from sgmft.decision.novelty import fit_novelty

    rng = np.random.default_rng(2)

    def posts(n, shift):
        x = rng.normal(0, 1, (n, 6))
        x[:, 0] += shift
        flip = rng.random(n) < np.clip(0.05 + 0.2 * np.maximum(x[:, 0], 0), 0, 0.45)
        label = (x[:, 0] > 0).astype(int) ^ flip
        p1 = 1 / (1 + np.exp(-4 * x[:, 0]))
        features = {"text": x + 3, "image": x[:, ::-1] + 3 + rng.normal(0, 0.1, (n, 6))}
        return features, label, np.stack([1 - p1, p1], 1)

    plain, weighted = [], []
    for _ in range(6):
        train, _, _ = posts(600, 0.0)
        held, y_held, p_held = posts(500, 0.0)
        index = fit_novelty(lambda name, rows, train=train: train[name][rows], 600, held)
        test, y_test, p_test = posts(500, 1.5)
        scores = 1 - p_held[np.arange(500), y_held]
        w_cal, w_test, shift = density_ratios(index, index.reduced(test))
        assert shift.detected
        q = threshold_from_scores(scores, 0.9)
        plain.append(sets_of_thresholds(p_test, np.full(500, q))[np.arange(500), y_test].mean())
        thresholds = weighted_thresholds(scores, w_cal, w_test, 0.9)
        weighted.append(sets_of_thresholds(p_test, thresholds)[np.arange(500), y_test].mean())
    assert np.mean(plain) < 0.85 and np.mean(weighted) > np.mean(plain) + 0.03
