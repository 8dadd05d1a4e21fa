"""What a profile reports beside ``profiles.parquet`` (`sgmft.serving.profiles`): the summary
``profiles.json`` (the population's shares first, then the ranked groups, the groups too small to
rank listed apart, the rows that could not be predicted and the batch's drift), ``profiles.csv``
(the Parquet file as CSV) and the figures: ``profiles.png`` (shares with their intervals for the
population and the busiest groups) and, with a time bucket, ``profiles-time.png`` (a label x
bucket heatmap of the population and of one group)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sgmft.io import atomic_write, atomic_write_json
from sgmft.serving.profiles import POPULATION, ProfileSpec

#: groups written into profiles.json (all are in profiles.parquet) and drawn in profiles.png
LISTED_GROUPS, DRAWN_GROUPS = 200, 11


def _read(db: Any, sql: str, params: list) -> list[dict[str, Any]]:
    found = db.execute(sql, params)
    names = [d[0] for d in found.description]
    return [dict(zip(names, row, strict=True)) for row in found.fetchall()]


def _shares(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows of one group and bucket as {posts, unsure, shares: {label: [share, low, high]}}."""
    return {
        "posts": rows[0]["posts"],
        "unsure": rows[0]["unsure"],
        "shares": {r["label"]: [round(r["share"], 4), round(r["low"], 4), round(r["high"], 4)] for r in rows},
    }


def _by(rows: list[dict[str, Any]], *keys: str) -> dict[Any, list[dict[str, Any]]]:
    found: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        found.setdefault(tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]], []).append(row)
    return found


def summary(path: Path, spec: ProfileSpec) -> dict[str, Any]:
    """``profiles.json``'s shares: the population overall and per bucket, the ranked groups with
    the most posts (`LISTED_GROUPS`), and how many groups were too small to rank."""
    import duckdb

    with duckdb.connect() as db:
        source = "read_parquet(?)"
        population = _read(
            db,
            f'SELECT * FROM {source} WHERE "group" = ? ORDER BY "time" NULLS FIRST, label',
            [str(path), POPULATION],
        )
        busiest = _read(
            db,
            f'SELECT "group", any_value(posts) AS posts FROM {source} WHERE "group" <> ? '
            'AND "time" IS NULL AND ranked GROUP BY "group" ORDER BY posts DESC, "group" LIMIT ?',
            [str(path), POPULATION, LISTED_GROUPS],
        )
        names = [b["group"] for b in busiest]
        rows = (
            _read(
                db,
                f'SELECT * FROM {source} WHERE "time" IS NULL AND list_contains(?, "group") '
                'ORDER BY "group", label',
                [str(path), names],
            )
            if names
            else []
        )
        counts = db.execute(
            f'SELECT count(DISTINCT "group") FILTER (WHERE ranked), count(DISTINCT "group") '
            f'FILTER (WHERE NOT ranked) FROM {source} WHERE "group" <> ? AND "time" IS NULL',
            [str(path), POPULATION],
        ).fetchone()
        small = [
            r[0]
            for r in db.execute(
                f'SELECT DISTINCT "group" FROM {source} WHERE NOT ranked AND '
                '"group" <> ? ORDER BY 1 LIMIT 50',
                [str(path), POPULATION],
            ).fetchall()
        ]
    overall = [r for r in population if r["time"] is None]
    grouped = _by(rows, "group")
    return {
        "method": spec.method,
        "by": spec.by,
        "every": spec.every,
        "min_posts": spec.min_posts,
        "population": _shares(overall),
        "population_by_time": {
            t: _shares(r) for t, r in _by([r for r in population if r["time"]], "time").items()
        },
        "groups": {name: _shares(grouped[name]) for name in names},
        "ranked_groups": counts[0],
        "small_groups": {"count": counts[1], "first": small},
    }


def plot_shares(path: Path, labels: list[str], figure_path: Path) -> None:
    """Small multiples: the population's and the busiest ranked groups' shares, with their 95 %
    intervals as error bars."""
    import duckdb
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with duckdb.connect() as db:
        rows = _read(
            db,
            'WITH top AS (SELECT "group", any_value(posts) AS posts FROM read_parquet(?) WHERE '
            '"time" IS NULL AND (ranked OR "group" = ?) GROUP BY "group" '
            'ORDER BY "group" <> ?, posts DESC, "group" LIMIT ?) '
            'SELECT p.* FROM read_parquet(?) p JOIN top USING ("group") WHERE p."time" IS NULL '
            'ORDER BY top."group" <> ?, top.posts DESC, p."group"',
            [str(path), POPULATION, POPULATION, DRAWN_GROUPS + 1, str(path), POPULATION],
        )
    groups = _by(rows, "group")
    columns = min(4, len(groups))
    lines = -(-len(groups) // columns)
    figure, axes = plt.subplots(
        lines, columns, figsize=(3.2 * columns, 2.6 * lines), squeeze=False, sharey=True
    )
    for axis, (name, found) in zip(axes.flat, groups.items(), strict=False):
        share = {r["label"]: r for r in found}
        values = [share[label]["share"] for label in labels]
        below = [share[label]["share"] - share[label]["low"] for label in labels]
        above = [share[label]["high"] - share[label]["share"] for label in labels]
        axis.bar(
            range(len(labels)),
            values,
            yerr=[below, above],
            capsize=2,
            color="#444" if name == POPULATION else "#3b75af",
        )
        axis.set_title(
            f"{'all posts' if name == POPULATION else name[:24]} ({found[0]['posts']})", fontsize=9
        )
        axis.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
        axis.set_ylim(0, 1)
    for axis in list(axes.flat)[len(groups) :]:
        axis.set_visible(False)
    figure.suptitle(f"estimated shares ({rows[0]['method']}) with 95 % intervals", fontsize=10)
    figure.tight_layout()
    atomic_write(figure_path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)


def plot_times(path: Path, labels: list[str], group: str | None, figure_path: Path) -> None:
    """Heatmaps of label x time bucket: the population's shares and those of ``group``."""
    import duckdb
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    shown = [POPULATION] + ([group] if group else [])
    with duckdb.connect() as db:
        rows = _read(
            db,
            'SELECT * FROM read_parquet(?) WHERE "time" IS NOT NULL AND list_contains(?, "group")',
            [str(path), shown],
        )
    buckets = sorted({r["time"] for r in rows})
    figure, axes = plt.subplots(
        1, len(shown), figsize=(0.4 * len(buckets) * len(shown) + 3, 3.6), squeeze=False
    )
    for axis, name in zip(axes[0], shown, strict=True):
        grid = np.full((len(labels), len(buckets)), np.nan)
        for r in rows:
            if r["group"] == name:
                grid[labels.index(r["label"]), buckets.index(r["time"])] = r["share"]
        image = axis.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        axis.set_yticks(range(len(labels)), labels, fontsize=8)
        axis.set_xticks(range(len(buckets)), buckets, rotation=90, fontsize=7)
        axis.set_title("all posts" if name == POPULATION else str(name)[:30], fontsize=9)
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="estimated share")
    atomic_write(figure_path, lambda tmp: figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(figure)


def write_report(
    path: Path,
    labels: list[str],
    spec: ProfileSpec,
    out: Path,
    extra: dict[str, Any],
    shown_group: str | None,
) -> dict[str, Any]:
    """``profiles.json`` (the `summary` and ``extra``: errors, drift, rates), ``profiles.csv`` and
    the figures; returns what profiles.json holds."""
    import duckdb

    report = summary(path, spec) | extra
    atomic_write_json(out / "profiles.json", report)
    temp = out / ".profiles.csv.tmp"

    def quoted(p: Path) -> str:
        return "'" + str(p).replace("'", "''") + "'"

    with duckdb.connect() as db:
        db.execute(f"COPY (SELECT * FROM read_parquet({quoted(path)})) TO {quoted(temp)} (HEADER)")
    temp.replace(out / "profiles.csv")
    plot_shares(path, labels, out / "profiles.png")
    if spec.every:
        busiest = next(iter(report["groups"]), None)
        plot_times(path, labels, shown_group or busiest, out / "profiles-time.png")
    return report
