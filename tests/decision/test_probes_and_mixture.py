"""Unimodal probes (logistic regressions folded into linear maps) and the fallback mixture."""

import numpy as np
import pytest
import torch

from sgmft.decision.mixture import choose_mixture, simplex_grid
from sgmft.decision.probes import fit_probe


def test_simplex_grid_covers_every_mixture_once():
    grid = simplex_grid(0.5, parts=3)
    assert grid == [(1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 1.0, 0.0), (0.0, 0.5, 0.5),
                    (0.0, 0.0, 1.0)]
    assert len(simplex_grid(0.1, parts=3)) == 66 and len(simplex_grid(0.1)) == 286
    assert all(abs(sum(w) - 1) < 1e-9 for w in simplex_grid(0.1))


def probs(logits):
    e = np.exp(np.asarray(logits, float))
    return e / e.sum(-1, keepdims=True)


def test_mixture_follows_the_worst_fold_log_loss():
    labels = np.array([0, 1, 0, 1])
    fold = np.array([0, 0, 1, 1])
    good = probs([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])       # right, confident
    wrong = probs([[0.0, 2.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])      # confidently wrong
    prior = np.full((4, 2), 0.5)
    weights, record = choose_mixture(np.stack([wrong, good, wrong, prior]), labels, fold)
    assert weights == (0.0, 1.0, 0.0, 0.0) and record["accuracy"] == 1.0
    by_hand = -np.log(np.exp(2) / (np.exp(2) + 1))
    assert record["log_loss"] == pytest.approx(by_hand)
    assert record["worst_fold_log_loss"] == pytest.approx(by_hand)
    parts = record["components"]
    assert parts["text"]["accuracy"] == 1.0 and parts["fused"]["accuracy"] == 0.0
    assert [f["n"] for f in record["per_fold"]] == [2, 2]
    # a tie goes to the fused head
    weights, _ = choose_mixture(np.stack([good, good, good, prior]), labels, fold)
    assert weights == (1.0, 0.0, 0.0, 0.0)


def test_a_part_that_fails_one_fold_loses_to_one_that_holds_on_every_fold():
    """Pooled, the fused head is the better part (right on 5 of 6 posts); but it is confidently
    wrong on all of fold 1, where the text holds: the worst fold decides, and the prior is
    there when neither holds."""
    labels = np.array([0, 1, 0, 1, 0, 1])
    fold = np.array([0, 0, 0, 0, 1, 1])
    fused = probs([[4, 0], [0, 4], [4, 0], [0, 4], [0, 4], [0, 4]])
    text = probs([[0.8, 0], [0, 0.8], [0, 0.8], [0.8, 0], [0.8, 0], [0, 0.8]])
    prior = np.full((6, 2), 0.5)
    weights, record = choose_mixture(np.stack([fused, text, np.full((6, 2), 0.5), prior]), labels, fold)
    pooled_best = min(((w, -np.log(np.tensordot(np.asarray(w), np.stack([fused, text, prior, prior]), 1)
                                   [np.arange(6), labels]).mean()) for w in simplex_grid(0.1)),
                      key=lambda item: item[1])[0]
    assert pooled_best[0] > weights[0]                       # pooled log-loss would trust the fused head more
    fused_folds = record["components"]["fused"]["per_fold"]
    assert record["worst_fold_log_loss"] < max(f["log_loss"] for f in fused_folds)
    # with every part confidently wrong on a fold, the prior takes over
    wrong = probs([[0, 4], [4, 0], [0, 4], [4, 0], [0, 4], [4, 0]])
    weights, _ = choose_mixture(np.stack([wrong, wrong, wrong, prior]), labels, fold)
    assert weights[3] == 1.0


def test_cross_fitted_probe_chooses_by_out_of_fold_log_loss_and_refits():
    from sgmft.decision.earned import Units
    from sgmft.decision.probes import CANDIDATES, DEFAULT, cross_fitted_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 4))
    y = (x[:, 0] > 0).astype(int)
    fold = np.repeat([0, 1, 2], 30)
    fold[:10] = -1                                            # kept in training in every fold
    units = Units(np.arange(80) % 20, 20, "twenty users")
    probe, oof, earned = cross_fitted_probe(x, y, 2, fold, np.ones(90, bool), units)
    assert (probe.standardise, probe.c) in [(s, c) for s, cs in CANDIDATES.items() for c in cs]
    assert [probe.standardise, probe.c] == earned["choice"]
    assert np.all(oof[:10] == 0) and (oof[10:].argmax(1) == y[10:]).mean() > 0.85
    assert probe.score == pytest.approx(-np.mean(np.log(probs(oof[10:])[np.arange(80), y[10:]])))
    # the final probe is refitted on the rows asked for
    refit = fold == -1
    small, _, _ = cross_fitted_probe(x, y, 2, fold, refit, units)
    assert not np.allclose(small.weight, probe.weight)
    # one informative group earns nothing: the default stays, whatever the out-of-fold scores
    wide = np.c_[x[:, :1] * 0.3, rng.normal(size=(90, 60))]           # 60 noise features, noisy labels:
    noisy = y ^ (rng.random(90) < 0.3)                                 # C = 1 overfits
    _, _, record = cross_fitted_probe(wide, noisy, 2, fold, np.ones(90, bool), units)
    assert record["earned"] and record["choice"] == [True, 0.01]
    alone = Units(np.zeros(80, int), 1, "one event")
    one, _, record = cross_fitted_probe(wide, noisy, 2, fold, np.ones(90, bool), alone)
    assert (one.standardise, one.c) == DEFAULT and not record["earned"] and "per label" in record["why"]


def test_probe_folds_standardisation_into_one_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)) * np.array([1, 10, 100, 0.1, 1]) + 3
    y = (x[:, 0] + x[:, 1] / 10 > 3.5).astype(int)
    probe = fit_probe(x, y, num_classes=3)
    assert probe.weight.shape == (3, 5) and probe.bias[2] == -30.0      # class 2 never seen
    assert (probe.logits(x).argmax(1) == y).mean() > 0.9


def test_fitted_probes_live_in_the_model_and_are_reused(tmp_path):
    from sgmft.decision.probes import fit_unimodal_probes
    from sgmft.models.config import ModelConfig
    from sgmft.models.model import MultimodalModel

    torch.manual_seed(0)
    model = MultimodalModel(ModelConfig(dim=8, heads=2, head_dim=2, classifier_hidden=(8, 8, 8, 8)), 4, 6, 2)
    labels = torch.arange(60) % 2
    train = {"text": torch.randn(60, 4) + labels[:, None] * 2, "image": torch.randn(60, 6), "label": labels}
    memo = {}
    _, oof = fit_unimodal_probes(model, train, None, memo=memo)
    assert oof == {}
    assert bool(model.probes.fitted) and len(memo) == 2
    torch.testing.assert_close(model.probes.text_mean, train["text"].mean(0))
    out = model.probes(train["text"], train["image"])
    assert (out["text"].argmax(-1) == labels).float().mean() > 0.9
    before = model.probes.text_weight.clone()
    fit_unimodal_probes(model, train, None, memo=memo)              # reused, not refitted
    assert torch.equal(before, model.probes.text_weight) and len(memo) == 2
    fold = np.arange(60) % 3
    _, oof = fit_unimodal_probes(model, train, fold, memo=memo)     # other folds: fitted anew
    assert len(memo) == 4 and oof["text"].shape == (60, 2)
