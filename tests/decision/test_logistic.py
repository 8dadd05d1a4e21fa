"""The streamed L-BFGS logistic regression against scikit-learn's (float64, in memory): the
same objective, so the same probabilities within a stated tolerance, in one batch or many."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from sgmft.decision.logistic import fit_logistic, statistics
from sgmft.decision.probes import streamed


def problem(classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 12)).astype(np.float32) * np.linspace(0.5, 3, 12).astype(np.float32) + 1
    logits = x[:, :classes] * 1.5 + rng.normal(size=(600, classes))      # noisy: not separable
    return x, logits.argmax(1)


def probabilities(weight, bias, x):
    z = x @ weight.T + bias
    z = z - z.max(1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.parametrize("c", [0.01, 1.0])
def test_equals_scikit_learn_within_tolerance(classes, c):
    x, y = problem(classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = LogisticRegression(C=c, max_iter=2000, tol=1e-8).fit(x.astype(np.float64), y)
    expected = reference.predict_proba(x)
    for size in (600, 64):                               # one batch, or streamed in ten
        weight, bias = fit_logistic(streamed(x, y, np.arange(600), size), 600, 12,
                                    torch.arange(classes), c)
        got = probabilities(weight.numpy(), bias.numpy(), x)
        assert np.abs(got - expected).max() < 2e-3, size


def test_statistics_over_batches_are_the_whole_s():
    x, y = problem(3)
    scale, n = statistics(streamed(x, y, np.arange(600), 50), 12)
    assert n == 600
    np.testing.assert_allclose(scale.mean.numpy(), x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(scale.std.numpy(), x.std(0), rtol=1e-4)


def test_a_warm_start_reaches_the_same_optimum():
    x, y = problem(3, seed=1)
    batches = streamed(x, y, np.arange(600))
    cold = fit_logistic(batches, 600, 12, torch.arange(3), 0.1)
    warm = fit_logistic(batches, 600, 12, torch.arange(3), 0.1, init=fit_logistic(batches, 600, 12,
                                                                                      torch.arange(3), 1.0))
    # the intercepts of a softmax are free up to a shared shift: compare what they predict
    got, expected = (probabilities(w.numpy(), b.numpy(), x) for w, b in (warm, cold))
    assert np.abs(got - expected).max() < 2e-3                   # the stated tolerance


def test_a_refit_warm_started_from_a_subsample_reaches_the_same_probabilities(monkeypatch):
    from sgmft.decision import probes

    x, y = problem(3, seed=2)
    cold = probes.refit(x, y, np.arange(600), 3, 0.1, True)
    monkeypatch.setattr(probes, "SELECTION_ROWS", 100)       # 600 rows: started from a 100-row fit
    warm = probes.refit(x, y, np.arange(600), 3, 0.1, True)
    got, expected = (probabilities(w, b, x) for w, b in (warm, cold))
    assert np.abs(got - expected).max() < 2e-3
