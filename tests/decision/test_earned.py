"""Earned choices: a candidate replaces its default only when its gain's interval over a bootstrap
of held-out units is above zero and enough units inform."""

import numpy as np
import pytest

from sgmft.decision.earned import (
    MIN_INFORMATIVE,
    Units,
    gain_interval,
    judge,
    judge_log_loss,
    per_post_log_loss,
)
from sgmft.decision.offsets import judge_offsets


def test_units_inform_as_far_as_the_label_shown_by_fewest_units():
    # the shape of me16-dev: "real" posts in one event only, beside fake-only events
    units = Units.of(["a", "a", "b", "b", "c", None], np.array([0, 1, 0, 0, 0, 0]), "by event")
    assert units.count == 4 and units.informative == 1          # label 1 is shown by event "a" alone
    assert units.unit.tolist() == [0, 0, 1, 1, 2, 3]             # a missing value is a unit of its own
    # one label per event, but many events of each label (the shift demo): they inform
    spread = Units.of([f"e{i}" for i in range(12)], np.arange(12) % 3, "by event")
    assert spread.informative == 4


def test_a_constant_gain_has_an_interval_of_one_point():
    units = Units(np.repeat(np.arange(10), 3), 10, "test")
    mean, low, high = gain_interval(np.full(30, 0.25), units)
    assert mean == low == high == pytest.approx(0.25)


def test_the_interval_is_over_units_not_posts():
    # one unit of 100 posts gains 1 and nine of 10 posts gain nothing: by posts the gain looks
    # steady (52.6 % of the posts agree), by units it rests on one draw in ten
    unit = np.r_[np.zeros(100, int), np.repeat(np.arange(1, 10), 10)]
    gain = np.r_[np.ones(100), np.zeros(90)]
    mean, low, high = gain_interval(gain, Units(unit, 10, "test"))
    assert mean == pytest.approx(100 / 190)
    assert low == 0.0 and high > 0.8  # draws without unit 0 gain nothing, draws with it often much


def test_nothing_is_earned_with_fewer_than_three_informative_units():
    few = Units(np.arange(100) % 2, MIN_INFORMATIVE - 1, "two events")
    verdict = judge("mixture", [1, 0], [0, 1], 0.5, 0.4, 0.6, few, "log-loss")
    assert not verdict.earned and verdict.choice == [1, 0] and "per label" in verdict.why
    many = Units(np.arange(100) % 20, 20, "twenty events")
    assert judge("mixture", [1, 0], [0, 1], 0.5, 0.4, 0.6, many, "log-loss").choice == [0, 1]
    assert not judge("mixture", [1, 0], [0, 1], 0.5, -0.1, 0.6, many, "log-loss").earned


def test_a_better_candidate_is_earned_and_a_lucky_one_is_not():
    rng = np.random.default_rng(0)
    n, units = 2000, Units(np.arange(2000) % 40, 40, "forty users")
    labels = rng.integers(0, 2, n)
    truth = np.where(labels[:, None] == np.arange(2), 0.8, 0.2)
    flat = np.full((n, 2), 0.5)
    assert judge_log_loss("probe", "flat", "sharp", flat, truth, labels, units).earned
    noise = np.clip(flat + rng.normal(0, 0.01, (n, 1)) * np.array([1, -1]), 0.01, 0.99)
    lucky = judge_log_loss("probe", "flat", "noisy", flat, noise, labels, units)
    assert not lucky.earned and lucky.low < 0 < lucky.high


def test_per_post_log_loss_by_hand():
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert per_post_log_loss(probs, np.array([0, 1])) == pytest.approx([np.log(2), -np.log(0.1)])


def test_offsets_are_earned_only_when_their_macro_f1_gain_holds_across_units():
    rng = np.random.default_rng(1)
    n = 1200
    labels = (rng.random(n) < 0.2).astype(int)  # a rare label 1
    p1 = np.clip(0.35 * labels + 0.15 + rng.normal(0, 0.08, n), 0.01, 0.99)  # never above 0.5
    probs = np.stack([1 - p1, p1], 1)
    offsets = np.array([0.0, 0.6])  # moves the rare label's posts over
    units = Units(np.arange(n) % 30, 30, "thirty users")
    earned = judge_offsets(probs, labels, offsets, units)
    assert earned.earned and earned.gain > 0.1 and earned.choice == [0.0, 0.6]
    one = Units(np.zeros(n, int), 1, "one event")
    assert not judge_offsets(probs, labels, offsets, one).earned
