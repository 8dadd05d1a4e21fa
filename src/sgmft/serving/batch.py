"""Batch prediction over a manifest (JSONL or CSV out) and per-user place profiles."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from sgmft.data.images import ImageError, load_image
from sgmft.data.manifest import Manifest, load_manifest
from sgmft.io import atomic_write_bytes
from sgmft.serving.predictor import PostInput, PredictionError, Predictor


def _record(post_id: str | None, row: int, user: str | None, **fields: Any) -> dict[str, Any]:
    return {"id": post_id, "row": row, "user": user, **fields}


def predict_manifest(predictor: Predictor, manifest_path: str | Path,
                     image_root: str | Path | None = None, batch_size: int = 64,
                     progress: bool = True) -> list[dict[str, Any]]:
    """One record per row, in row order: the prediction, or ``error`` for a bad row.

    A bad row (see `load_manifest`) or a post that fails at prediction time gets an error
    record; it never stops the batch.
    """
    manifest: Manifest = load_manifest(manifest_path, image_root, read_labels=False,
                                       require_labels=False, skip_invalid=True)
    records = [_record(p.id, p.row, None, error=p.problem) for p in manifest.skipped]
    bar = tqdm(total=len(manifest.posts), desc="predict", unit="post", disable=not progress)
    for start in range(0, len(manifest.posts), batch_size):
        chunk = manifest.posts[start:start + batch_size]
        inputs, ready = [], []
        for post in chunk:
            try:
                inputs.append(PostInput(post.text, load_image(post.image), post.id))
                ready.append(post)
            except ImageError as exc:
                records.append(_record(post.id, post.row, post.user, error=str(exc)))
        try:
            predictions = predictor.predict(inputs)
        except PredictionError as exc:  # only when a whole batch is unusable
            predictions = []
            records += [_record(p.id, p.row, p.user, error=str(exc)) for p in ready]
        for post, prediction in zip(ready, predictions, strict=False):
            records.append(_record(post.id, post.row, post.user, **prediction.to_dict()))
        bar.update(len(chunk))
    bar.close()
    return sorted(records, key=lambda r: r["row"])


def write_predictions(records: list[dict[str, Any]], out: str | Path, labels: list[str]) -> None:
    """JSONL (full records) or CSV (id, row, user, place, one probability column per label,
    text_only, image_only, error), by the file's extension."""
    out = Path(out)
    if out.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["id", "row", "user", "place", *(f"p_{label}" for label in labels),
                         "text_only", "image_only", "error"])
        for r in records:
            probs = r.get("probabilities", {})
            evidence = r.get("evidence", {})
            writer.writerow([r["id"], r["row"], r["user"] or "", r.get("place", ""),
                             *(probs.get(label, "") for label in labels),
                             evidence.get("text_only", {}).get("place", ""),
                             evidence.get("image_only", {}).get("place", ""), r.get("error", "")])
        atomic_write_bytes(out, buffer.getvalue().encode("utf-8"))
    else:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        atomic_write_bytes(out, lines.encode("utf-8"))


def user_profiles(records: list[dict[str, Any]], labels: list[str]) -> dict[str, dict[str, Any]]:
    """Per user: number of predicted posts and the share of each predicted place."""
    counts: dict[str, Counter] = {}
    for r in records:
        if "place" in r and r.get("user"):
            counts.setdefault(r["user"], Counter())[r["place"]] += 1
    return {user: {"posts": sum(c.values()),
                   "places": {label: c[label] / sum(c.values()) for label in labels}}
            for user, c in sorted(counts.items())}


def plot_profiles(profiles: dict[str, dict[str, Any]], labels: list[str], path: Path,
                  max_users: int = 40) -> None:
    """Stacked horizontal bars: each user's distribution of predicted places."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sgmft.io import atomic_write

    users = sorted(profiles, key=lambda u: -profiles[u]["posts"])[:max_users]
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(users) + 1.2))
    left = [0.0] * len(users)
    colours = plt.get_cmap("tab10")
    for c, label in enumerate(labels):
        shares = [profiles[u]["places"][label] for u in users]
        axes.barh(users, shares, left=left, color=colours(c % 10), label=label)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    axes.set_xlim(0, 1)
    axes.invert_yaxis()
    axes.set_xlabel("share of the user's posts")
    axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    axes.set_title("predicted places per user")
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(figure)
