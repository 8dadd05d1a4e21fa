"""Per-user profiles: the distribution of predicted labels over each user's posts, written as
``profiles.json``, ``profiles.csv`` and ``profiles.png``."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

from sgmft.io import atomic_write, atomic_write_bytes, atomic_write_json


def user_profiles(records: list[dict[str, Any]], labels: list[str]) -> dict[str, dict[str, Any]]:
    """Per user: the number of predicted posts and the share of each predicted label."""
    counts: dict[str, Counter] = {}
    for r in records:
        if "label" in r and r.get("user"):
            counts.setdefault(r["user"], Counter())[r["label"]] += 1
    return {user: {"posts": sum(c.values()),
                   "labels": {label: c[label] / sum(c.values()) for label in labels}}
            for user, c in sorted(counts.items())}


def plot_profiles(profiles: dict[str, dict[str, Any]], labels: list[str], path: Path,
                  max_users: int = 40) -> None:
    """Stacked horizontal bars: each user's distribution of predicted labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = sorted(profiles, key=lambda u: -profiles[u]["posts"])[:max_users]
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(users) + 1.2))
    left = [0.0] * len(users)
    colours = plt.get_cmap("tab10")
    for c, label in enumerate(labels):
        shares = [profiles[u]["labels"][label] for u in users]
        axes.barh(users, shares, left=left, color=colours(c % 10), label=label)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    axes.set_xlim(0, 1)
    axes.invert_yaxis()
    axes.set_xlabel("share of the user's posts")
    axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    axes.set_title("predicted labels per user")
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(figure)


def write_profiles(profiles: dict[str, dict[str, Any]], labels: list[str], skipped: dict[str, Any],
                   errors: list[dict[str, Any]], out: Path) -> None:
    """``profiles.json`` (with the rows that could not be predicted), ``profiles.csv`` and
    ``profiles.png``."""
    atomic_write_json(out / "profiles.json", {"users": profiles, "row_errors": len(errors),
                                              "errors": errors, "skipped_rows": skipped})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["user", "posts", *labels])
    for user, p in profiles.items():
        writer.writerow([user, p["posts"], *(f"{p['labels'][label]:.3f}" for label in labels)])
    atomic_write_bytes(out / "profiles.csv", buffer.getvalue().encode())
    plot_profiles(profiles, labels, out / "profiles.png")
