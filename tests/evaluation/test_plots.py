"""The figures of an evaluation are PNG files."""

import numpy as np

from sgmft.evaluation.plots import plot_confusion, plot_reliability, plot_selective, plot_tsne_panels


def test_figures_are_png(tmp_path):
    plot_confusion(np.array([[3, 1], [0, 4]]), ["a", "b"], tmp_path / "c.png")
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (10, 5)), rng.normal(5, 1, (10, 5))])
    plot_tsne_panels([("x", features, np.repeat([0, 1], 10))], ["a", "b"], tmp_path / "t.png")
    plot_reliability([{"n": 3, "confidence": 0.7, "accuracy": 0.6}], tmp_path / "r.png")
    plot_selective(np.linspace(0.1, 1, 10), np.linspace(1, 0.5, 10), tmp_path / "s.png")
    for name in ("c.png", "t.png", "r.png", "s.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
