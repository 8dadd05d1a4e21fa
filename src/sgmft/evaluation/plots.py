"""Figures: the confusion matrix and t-SNE maps of M_fuse coloured by class (Figures 5, 7, 8)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.manifold import TSNE

from sgmft.io import atomic_write


def _save(figure, path: Path) -> None:
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(figure)


def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix with counts in the cells."""
    matrix = np.asarray(matrix)
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(1.0 + 0.7 * len(labels), 0.8 + 0.6 * len(labels)))
    axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        axes.text(j, i, str(count), ha="center", va="center", fontsize=8,
                  color="white" if rates[i, j] > 0.5 else "black")
    axes.set_title(title)
    _save(figure, path)


#: fewest points a t-SNE map is drawn for (its perplexity must stay below N)
TSNE_MIN_POSTS = 5


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, F) -> (N, 2) t-SNE coordinates (perplexity adapted to small N; N >= TSNE_MIN_POSTS)."""
    perplexity = float(min(30, max(1, (len(features) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(features, dtype=np.float64))


def plot_tsne_panels(panels: list[tuple[str, np.ndarray, np.ndarray]], labels: list[str],
                     path: Path, seed: int = 0) -> None:
    """One t-SNE scatter per (title, features (N, F), classes (N,)), side by side."""
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    colours = plt.get_cmap("tab10")
    for axis, (title, features, classes) in zip(axes[0], panels, strict=True):
        points = tsne_embedding(features, seed)
        for c, label in enumerate(labels):
            mask = classes == c
            axis.scatter(points[mask, 0], points[mask, 1], s=6, color=colours(c % 10), label=label)
        axis.set_title(title, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2)
    _save(figure, path)


def plot_reliability(bins: list[dict[str, float]], path: Path, title: str = "") -> None:
    """Reliability diagram: accuracy against mean confidence per confidence bin (a dot's area
    grows with its posts), with the diagonal of perfect calibration."""
    figure, axes = plt.subplots(figsize=(4.4, 4.2))
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    if bins:
        sizes = np.asarray([b["n"] for b in bins], float)
        x, y = [b["confidence"] for b in bins], [b["accuracy"] for b in bins]
        axes.scatter(x, y, s=20 + 200 * sizes / sizes.max(), color="#3b7dd8", label="bins (area: posts)")
        axes.plot(x, y, color="#3b7dd8", linewidth=1)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence (top probability)")
    axes.set_ylabel("accuracy")
    axes.legend(loc="upper left", fontsize=8)
    axes.set_title(title, fontsize=10)
    _save(figure, path)


def plot_selective(coverage: np.ndarray, accuracy: np.ndarray, path: Path, title: str = "") -> None:
    """Accuracy-coverage curve of selective prediction: answering only the most confident share
    of posts, how accurate the answers are."""
    figure, axes = plt.subplots(figsize=(4.4, 4.2))
    axes.plot(coverage, accuracy, color="#3b7dd8")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("coverage (share of posts answered)")
    axes.set_ylabel("accuracy of the answered posts")
    axes.set_title(title, fontsize=10)
    _save(figure, path)
