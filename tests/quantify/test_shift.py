"""The margin that widens profile intervals for new groups: each held-out unit's score (how far its
true shares fall outside the interval it gets from the other units' rates), the split-conformal
quantile over units, and what a shifted batch gets when too few units can earn a margin."""

import math

import numpy as np
import pytest

from sgmft.quantify.estimators import Z95, Estimate
from sgmft.quantify.rates import Rates
from sgmft.quantify.shift import MIN_UNITS, conformal_quantile, margin, unit_scores, widen


def _units(probabilities: list[float], labels: list[int], posts: int = 10) -> Rates:
    """Units of ``posts`` posts each: unit u's posts all have P(label 0) = probabilities[u] and the
    true label labels[u]."""
    p0 = np.repeat(probabilities, posts)
    return Rates(
        np.column_stack([p0, 1 - p0]),
        np.repeat(labels, posts),
        np.array([0.5, 0.5]),
        np.repeat(np.arange(len(probabilities)), posts),
    )


def _pcc_excess(p: float, posts: int = 10) -> float:
    """By hand: a unit of label 1 whose posts all say P(label 0) = p has a pcc share of label 0
    of p, half-width 1.96 sqrt(n p (1 - p)) / n + 0.5 / n, true share 0: it falls outside by the
    low end, when that is above 0."""
    half = Z95 * math.sqrt(posts * p * (1 - p)) / posts + 0.5 / posts
    return max(0.0, p - half)


def test_a_unit_inside_its_interval_scores_zero_and_one_outside_scores_its_distance():
    rates = _units([0.9, 0.9], [0, 1])
    scores = unit_scores(rates, "pcc")
    assert scores[0] == 0.0  # share 0.9 of label 0, truly 1.0: inside [0.664, 1]
    assert scores[1] == pytest.approx(_pcc_excess(0.9))  # truly 0: 0.664 below the low end
    assert scores[1] == pytest.approx(0.9 - Z95 * 0.3 / math.sqrt(10) - 0.05)


def test_adjusted_units_are_scored_with_the_other_units_rates():
    # units 0 and 1 (label 0) answer P(label 0) = 0.8, unit 2 (label 1) 0.3. Without unit 2 no
    # held-out post has label 1: M = [[0.8, 0], [0.2, 1]] (the identity column), so pacc solves
    # q = (0.3, 0.7) to p = (0.375, 0.625); the outputs do not vary within a label, so the
    # interval is p -+ 0.5 / 10, and the truth (0, 1) lies 0.375 - 0.05 outside it. Without unit
    # 0, M = [[0.8, 0.3], [0.2, 0.7]] maps unit 0's q = (0.8, 0.2) to its truth (1, 0) exactly.
    rates = _units([0.8, 0.8, 0.3], [0, 0, 1])
    scores = unit_scores(rates, "pacc")
    assert scores[2] == pytest.approx(0.325)
    assert scores[0] == scores[1] == 0.0


def test_the_conformal_quantile_needs_19_units_at_95_percent():
    scores = np.arange(1.0, 20.0)  # 19 scores: rank ceil(20 * 0.95) = 19
    assert conformal_quantile(scores) == 19.0
    assert conformal_quantile(np.arange(1.0, 41.0)) == 39.0  # rank ceil(41 * 0.95) = 39
    assert math.isinf(conformal_quantile(scores[:18]))


def test_the_margin_is_the_units_conformal_quantile():
    probabilities = list(np.linspace(0.5, 0.95, 20))
    rates = _units(probabilities, [1] * 20)
    found = margin(rates, "pcc", shifted=False)
    expected = sorted(_pcc_excess(p) for p in probabilities)[19]  # 20 units: the largest
    assert found.value == pytest.approx(expected) and found.units == 20
    assert "widened by" in found.how and "unlike" not in found.how
    assert "unlike" in margin(rates, "pcc", shifted=True).how


def test_too_few_units_widen_a_shifted_batch_to_everything_and_leave_another_alone():
    rates = _units([0.9] * (MIN_UNITS - 1), [1] * (MIN_UNITS - 1))
    shifted = margin(rates, "pcc", shifted=True)
    assert shifted.value == 1.0 and "[0, 1]" in shifted.how and f"{MIN_UNITS - 1} held-out" in shifted.how
    assert margin(rates, "pcc", shifted=False).value == 0.0
    no_units = Rates(rates.probs, rates.labels, rates.train_prior)
    assert margin(no_units, "pcc", shifted=True).value == 1.0
    assert margin(None, "pcc", shifted=False).value == 0.0


def test_widen_moves_each_end_within_zero_and_one():
    found = Estimate(np.array([[0.3, 0.7]]), np.array([[0.2, 0.6]]), np.array([[0.4, 0.95]]), "pcc")
    wider = widen(found, 0.25)
    assert np.allclose(wider.low, [[0.0, 0.35]]) and np.allclose(wider.high, [[0.65, 1.0]])
    assert np.array_equal(wider.shares, found.shares) and widen(found, 0.0) is found


def test_rates_check_their_units_and_leave_posts_out():
    rates = _units([0.9, 0.2], [0, 1], posts=3)
    rest = rates.without(rates.units == 0)
    assert len(rest.labels) == 3 and set(rest.units) == {1}
    with pytest.raises(ValueError, match="units"):
        Rates(rates.probs, rates.labels, rates.train_prior, rates.units[:2])
