"""The quantification estimators: hand-computed cases, QuaPy on the same inputs, and a prior
shift that cc misses and the adjusted methods correct."""

import numpy as np
import pytest

from sgmft.quantify.estimators import METHODS, clip_normalise, em_shares, estimate
from sgmft.quantify.rates import Rates


def _rates(seed: int = 0, n: int = 3000, accuracy: float = 0.8) -> tuple[Rates, np.random.Generator]:
    """Held-out posts of 3 labels, equally common, and the model's probabilities of them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    return Rates(_model(labels, rng, accuracy), labels, np.full(3, 1 / 3)), rng


def _model(labels: np.ndarray, rng: np.random.Generator, accuracy: float = 0.8) -> np.ndarray:
    """(N, 3) calibrated probabilities (under equal training shares): each post is a point
    x ~ N(mu e_y, I), and its probabilities are the exact Bayes posteriors softmax(mu x); the
    larger ``accuracy``, the farther apart the labels."""
    mu = 1.0 + 3.0 * accuracy
    x = rng.normal(size=(len(labels), 3)) + mu * np.eye(3)[labels]
    logits = mu * x
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_cc_and_pcc_by_hand():
    probs = np.array(
        [
            [0.9, 0.1],
            [0.6, 0.4],
            [0.2, 0.8],  # group 0: 3 posts
            [0.3, 0.7],
        ]
    )  # group 1: 1 post
    starts = np.array([0, 3])
    counted = estimate("cc", probs, starts)
    np.testing.assert_allclose(counted.shares, [[2 / 3, 1 / 3], [0.0, 1.0]])
    mean = estimate("pcc", probs, starts)
    np.testing.assert_allclose(mean.shares, [[1.7 / 3, 1.3 / 3], [0.3, 0.7]])
    # Poisson-binomial: sd of the count = sqrt(0.09 + 0.24 + 0.16) = 0.7; interval on shares,
    # widened by half a post
    half = 1.959964 * 0.7 / 3 + 0.5 / 3
    np.testing.assert_allclose(mean.low[0, 0], max(0.0, 1.7 / 3 - half))
    np.testing.assert_allclose(mean.low[0, 1], max(0.0, 1.3 / 3 - half))
    np.testing.assert_allclose(mean.high[0, 0], min(1.0, 1.7 / 3 + half))
    for e in (counted, mean):
        np.testing.assert_allclose(e.shares.sum(1), 1.0)
        assert (e.low <= e.shares + 1e-12).all() and (e.shares <= e.high + 1e-12).all()


def test_acc_inverts_a_known_confusion():
    # the model calls 80 % of label 0 right and 70 % of label 1: a group of true shares (0.25,
    # 0.75) shows q = M p = (0.8*0.25 + 0.3*0.75, 0.2*0.25 + 0.7*0.75) on average
    probs = np.array([[0.9, 0.1]] * 8 + [[0.1, 0.9]] * 2 + [[0.1, 0.9]] * 7 + [[0.9, 0.1]] * 3)
    labels = np.array([0] * 10 + [1] * 10)
    rates = Rates(probs, labels, np.array([0.5, 0.5]))
    np.testing.assert_allclose(rates.hard, [[0.8, 0.3], [0.2, 0.7]])
    q = np.array([0.8 * 0.25 + 0.3 * 0.75, 0.2 * 0.25 + 0.7 * 0.75])
    group = np.array([[0.9, 0.1]] * round(q[0] * 1000) + [[0.1, 0.9]] * round(q[1] * 1000))
    adjusted = estimate("acc", group, np.array([0]), rates)
    np.testing.assert_allclose(adjusted.shares[0], [0.25, 0.75], atol=2e-3)
    assert adjusted.low[0, 0] < 0.25 < adjusted.high[0, 0]


def test_clip_normalise_as_quapy():
    np.testing.assert_allclose(
        clip_normalise(np.array([[1.2, -0.1, 0.3], [0.0, 0.0, 0.0]])),
        [[1 / 1.3, 0, 0.3 / 1.3], [1 / 3, 1 / 3, 1 / 3]],
    )


def test_em_stops_where_quapy_stops():
    qp = pytest.importorskip("quapy")
    from quapy.method.aggregative import EMQ

    rates, rng = _rates(1)
    labels = rng.choice(3, 400, p=[0.6, 0.3, 0.1])
    probs = _model(labels, rng)
    sizes = [50, 120, 230]
    starts = np.cumsum([0, *sizes[:-1]])
    shares, posteriors = em_shares(probs, starts, rates.train_prior)
    for g, (start, size) in enumerate(zip(starts, sizes, strict=True)):
        expected, expected_post = EMQ.EM(rates.train_prior, probs[start : start + size])
        np.testing.assert_allclose(shares[g], expected, atol=1e-10)
        np.testing.assert_allclose(posteriors[start : start + size], expected_post, atol=1e-10)
    del qp


@pytest.mark.parametrize("method", ["acc", "pacc"])
def test_adjusted_as_quapy(method):
    pytest.importorskip("quapy")
    import quapy.functional as F
    from quapy.method.aggregative import ACC, PACC

    rates, rng = _rates(2)
    probs = _model(rng.choice(3, 300, p=[0.2, 0.2, 0.6]), rng)
    if method == "acc":
        matrix = ACC.getPteCondEstim(np.arange(3), rates.labels, rates.probs.argmax(1))
        q = np.bincount(probs.argmax(1), minlength=3) / len(probs)
    else:
        matrix = PACC.getPteCondEstim(np.arange(3), rates.labels, rates.probs)
        q = probs.mean(0)
    expected = F.normalize_prevalence(ACC.solve_adjustment(matrix, q, "inversion", "exact-raise"), "clip")
    ours = estimate(method, probs, np.array([0]), rates)
    np.testing.assert_allclose(ours.shares[0], expected, atol=1e-10)


def test_adjusted_methods_recover_a_prior_shift_that_cc_misses():
    rates, rng = _rates(3, accuracy=0.6)
    truth = np.array([0.7, 0.2, 0.1])
    labels = rng.choice(3, 20000, p=truth)
    probs = _model(labels, rng, accuracy=0.6)
    errors = {
        m: np.abs(
            estimate(m, probs, np.array([0]), rates).shares[0] - np.bincount(labels) / len(labels)
        ).sum()
        for m in METHODS
    }
    for method in ("acc", "pacc", "emq"):
        assert errors[method] < 0.5 * errors["cc"], errors
        e = estimate(method, probs, np.array([0]), rates)
        assert ((e.low[0] <= truth + 0.01) & (truth - 0.01 <= e.high[0])).all(), (method, e)


def test_intervals_cover_small_groups():
    """Groups of 5 and 20 posts drawn from shares far from training's: the adjusted and EM
    intervals hold the group's true share in about 95 % of the labels (>= 90 %)."""
    rates, rng = _rates(4)
    for size in (5, 20):
        labels = np.concatenate([rng.choice(3, size, p=rng.dirichlet(np.ones(3))) for _ in range(300)])
        probs = _model(labels, rng)
        starts = np.arange(0, len(labels), size)
        truth = np.eye(3)[labels].reshape(-1, size, 3).mean(1)
        for method in ("pcc", "pacc", "emq"):
            e = estimate(method, probs, starts, rates)
            inside = ((e.low <= truth + 1e-9) & (truth <= e.high + 1e-9)).mean()
            assert inside >= 0.9, (method, size, inside)


def test_bad_calls_say_what_is_wrong():
    probs = np.array([[0.5, 0.5]])
    with pytest.raises(ValueError, match="unknown method 'mean'"):
        estimate("mean", probs, np.array([0]))
    with pytest.raises(ValueError, match="needs the model's error rates"):
        estimate("pacc", probs, np.array([0]))
    with pytest.raises(ValueError, match="no posts"):
        estimate("cc", np.zeros((0, 2)), np.array([0]))
    with pytest.raises(ValueError, match="disagree"):
        Rates(np.zeros((3, 2)), np.zeros(2, int), np.array([0.5, 0.5]))
