"""Unimodal probes (logistic regressions folded into linear maps) and the fallback mixture."""

import numpy as np
import pytest
import torch

from sgmft.models.fallback import choose_mixture, fit_probe, simplex_grid


def test_simplex_grid_covers_every_mixture_once():
    grid = simplex_grid(0.5)
    assert grid == [(1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 1.0, 0.0), (0.0, 0.5, 0.5),
                    (0.0, 0.0, 1.0)]
    assert len(simplex_grid(0.1)) == 66 and all(abs(sum(w) - 1) < 1e-9 for w in simplex_grid(0.1))


def test_mixture_follows_validation_log_loss():
    labels = np.array([0, 1, 0, 1])
    good = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])     # right, confident
    wrong = -good                                                          # confidently wrong
    weights, scores = choose_mixture(wrong, good, wrong, labels)
    assert weights == (0.0, 1.0, 0.0) and scores["accuracy"] == 1.0 and scores["text_accuracy"] == 1.0
    # a tie in log-loss goes to accuracy, then to the fused head
    weights, _ = choose_mixture(good, good, good, labels)
    assert weights == (1.0, 0.0, 0.0)
    by_hand = -np.log(np.exp(2) / (np.exp(2) + 1))
    assert scores["log_loss"] == pytest.approx(by_hand)


def test_probe_folds_standardisation_into_one_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)) * np.array([1, 10, 100, 0.1, 1]) + 3
    y = (x[:, 0] + x[:, 1] / 10 > 3.5).astype(int)
    probe = fit_probe(x, y, num_classes=3)
    assert probe.weight.shape == (3, 5) and probe.bias[2] == -30.0      # class 2 never seen
    assert (probe.logits(x).argmax(1) == y).mean() > 0.9


def test_fitted_probes_live_in_the_model_and_are_reused(tmp_path):
    from sgmft.models.config import ModelConfig
    from sgmft.models.fallback import fit_unimodal_probes
    from sgmft.models.model import MultimodalModel

    torch.manual_seed(0)
    model = MultimodalModel(ModelConfig(dim=8, heads=2, head_dim=2, classifier_hidden=(8, 8, 8, 8)), 4, 6, 2)
    labels = torch.arange(60) % 2
    train = {"text": torch.randn(60, 4) + labels[:, None] * 2, "image": torch.randn(60, 6), "label": labels}
    memo = {}
    fit_unimodal_probes(model, train, None, memo=memo)
    assert bool(model.probes.fitted) and len(memo) == 2
    torch.testing.assert_close(model.probes.text_mean, train["text"].mean(0))
    out = model.probes(train["text"], train["image"])
    assert (out["text"].argmax(-1) == labels).float().mean() > 0.9
    before = model.probes.text_weight.clone()
    fit_unimodal_probes(model, train, None, memo=memo)              # reused, not refitted
    assert torch.equal(before, model.probes.text_weight) and len(memo) == 2
