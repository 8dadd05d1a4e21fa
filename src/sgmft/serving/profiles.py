"""Per-user profiles: the distribution of predicted labels over each user's posts, written as
``profiles.json``, ``profiles.csv`` and ``profiles.png``.

The counts come out of core: DuckDB groups a Parquet predictions file
(`sgmft.serving.batch`) by user and label, so millions of posts cost what their distinct
users cost.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from sgmft.io import atomic_write, atomic_write_bytes, atomic_write_json


def user_profiles(predictions: Path, labels: list[str]) -> dict[str, dict[str, Any]]:
    """Per user of a Parquet predictions file: the number of predicted posts and the share of
    each label in ``labels`` (the run's, and "unsure")."""
    import duckdb

    with duckdb.connect() as db:
        rows = db.execute("SELECT \"user\", label, count(*) FROM read_parquet(?) WHERE error IS NULL AND "
                          "\"user\" IS NOT NULL GROUP BY ALL ORDER BY ALL", [str(predictions)]).fetchall()
    counts: dict[str, dict[str, int]] = {}
    for user, label, n in rows:
        counts.setdefault(user, {})[label] = n
    return {user: {"posts": sum(c.values()), "labels": {label: c.get(label, 0) / sum(c.values())
                                                         for label in labels}}
            for user, c in counts.items()}


def row_errors(predictions: Path) -> list[dict[str, Any]]:
    """The records of a Parquet predictions file that are errors (id, row, user, true label,
    error)."""
    import duckdb

    with duckdb.connect() as db:
        found = db.execute("SELECT id, \"row\", \"user\", true_label, error FROM read_parquet(?) "
                           "WHERE error IS NOT NULL ORDER BY \"row\"", [str(predictions)])
        names = [d[0] for d in found.description]
        return [dict(zip(names, values, strict=True)) for values in found.fetchall()]


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
                   errors: list[dict[str, Any]], out: Path, drift: dict[str, Any] | None = None) -> None:
    """``profiles.json`` (with the rows that could not be predicted and the batch's drift report:
    when the posts are unlike the training posts, the shares rest on answers whose error rates
    were measured on other posts), ``profiles.csv`` and ``profiles.png``."""
    atomic_write_json(out / "profiles.json", {"users": profiles, "row_errors": len(errors),
                                              "errors": errors, "skipped_rows": skipped, "drift": drift})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["user", "posts", *labels])
    for user, p in profiles.items():
        writer.writerow([user, p["posts"], *(f"{p['labels'][label]:.3f}" for label in labels)])
    atomic_write_bytes(out / "profiles.csv", buffer.getvalue().encode())
    plot_profiles(profiles, labels, out / "profiles.png")
