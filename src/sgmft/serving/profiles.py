"""Profiles: the estimated share of each label among the posts of every group (a user, an event,
any column), overall and by time bucket (hour of day, weekday, month), each with a 95 %
interval, from a Parquet predictions file (`sgmft.serving.batch`, with the ``by`` and ``time``
columns `sgmft profile` asks for).

Out of core: DuckDB reads the predictions sorted by group and bucket, a batch of rows at a time;
the groups complete in a batch are estimated at once (`sgmft.quantify.estimators`) and written
to ``profiles.parquet`` as they come, so memory follows the largest group, not the file. The
population is the group ``*``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sgmft.quantify.estimators import DEFAULT_METHOD, estimate
from sgmft.quantify.rates import Rates
from sgmft.quantify.shift import widen

#: the time buckets, as DuckDB expressions of the ``time`` column (a wall clock, ISO 8601)
EVERY = {"hour": "strftime(CAST(\"time\" AS TIMESTAMP), '%H')",
         "weekday": "strftime(CAST(\"time\" AS TIMESTAMP), '%u-%a')",
         "month": "strftime(CAST(\"time\" AS TIMESTAMP), '%Y-%m')"}
POPULATION = "*"
#: rows of the predictions file read at a time
BATCH_ROWS = 200_000
#: the file in a run folder that names the folder of its last profile (the web page's view)
LAST_PROFILE = "last_profile.json"
#: the files of a profile the web page may show
FIGURES = ("profiles.png", "profiles-time.png")


def remember_profile(run: Path, out: Path) -> None:
    """Record ``out`` as the run's last profile."""
    from sgmft.io import atomic_write_json

    atomic_write_json(run / LAST_PROFILE, {"folder": str(out.resolve())})


def last_profile(run: Path) -> Path | None:
    """The folder of the run's last profile, when it still holds a ``profiles.json``."""
    import json

    try:
        folder = Path(json.loads((run / LAST_PROFILE).read_text(encoding="utf-8"))["folder"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder if (folder / "profiles.json").is_file() else None


@dataclass(frozen=True)
class ProfileSpec:
    """What to profile: by which column, by which time bucket (None: overall only), how (a
    method of `sgmft.quantify.estimators.METHODS`), the posts a group needs to be ranked, and
    what every interval is widened by on each side (`sgmft.quantify.shift.margin`)."""

    by: str = "user"
    every: str | None = None
    method: str = DEFAULT_METHOD
    min_posts: int = 5
    margin: float = 0.0


@dataclass
class Chunk:
    """Estimated groups: names (G,), time buckets (G,) or None, posts (G,), unsure (G,) and
    (G, K) shares, low and high."""

    groups: list[str]
    times: list[str | None]
    posts: np.ndarray
    unsure: np.ndarray
    shares: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _query(labels: list[str], key: str, bucket: str | None) -> str:
    probs = ", ".join(f'"p_{label}"' for label in labels)
    timed = ' AND "time" IS NOT NULL' if bucket else ""
    return (f"SELECT {key} AS g, {bucket or 'NULL'} AS t, label = 'unsure' AS unsure, {probs} "
            f"FROM read_parquet(?) WHERE error IS NULL AND {key} IS NOT NULL{timed} ORDER BY g, t")


def grouped(predictions: Path, labels: list[str], spec: ProfileSpec, rates: Rates | None,
            population: bool, by_time: bool) -> Iterator[Chunk]:
    """The estimated shares of the population (``population``) or of each group of the ``by``
    column, overall or per time bucket (``by_time``), a batch of complete groups at a time."""
    import duckdb

    key = f"'{POPULATION}'" if population else '"by"'
    bucket = EVERY[spec.every] if by_time and spec.every else None
    with duckdb.connect() as db:
        reader = db.sql(_query(labels, key, bucket), params=[str(predictions)]).to_arrow_reader(BATCH_ROWS)
        held: list[Any] = []
        for batch in reader:
            held.append(batch)
            rows = sum(b.num_rows for b in held)
            if rows >= BATCH_ROWS:
                done, held = _split_last_group(held)
                if done is not None:
                    yield _estimate(done, labels, spec, rates)
        if held and sum(b.num_rows for b in held):
            import pyarrow as pa

            yield _estimate(pa.Table.from_batches(held), labels, spec, rates)


def _split_last_group(held: list[Any]) -> tuple[Any, list[Any]]:
    """The rows of complete groups (a table, or None when one group fills them all) and the rows
    of the last group, which may go on in the next batch."""
    import pyarrow as pa

    table = pa.Table.from_batches(held)
    g, t = table.column("g").to_pylist(), table.column("t").to_pylist()
    last = len(g) - 1
    while last > 0 and (g[last - 1], t[last - 1]) == (g[-1], t[-1]):
        last -= 1
    if last == 0:
        return None, held
    return table.slice(0, last), table.slice(last).to_batches()


def _estimate(table: Any, labels: list[str], spec: ProfileSpec, rates: Rates | None) -> Chunk:
    g, t = table.column("g").to_pylist(), table.column("t").to_pylist()
    starts = np.flatnonzero([i == 0 or (g[i], t[i]) != (g[i - 1], t[i - 1]) for i in range(len(g))])
    probs = np.column_stack([table.column(f"p_{label}").to_numpy(zero_copy_only=False) for label in labels])
    unsure = table.column("unsure").to_numpy(zero_copy_only=False).astype(np.int64)
    found = widen(estimate(spec.method, probs, starts, rates), spec.margin)
    posts = np.diff(np.append(starts, len(g)))
    return Chunk([str(g[s]) for s in starts], [t[s] for s in starts], posts, np.add.reduceat(unsure, starts),
                 found.shares, found.low, found.high)


def write_parquet(chunks: Iterator[Chunk], labels: list[str], spec: ProfileSpec, path: Path) -> None:
    """``profiles.parquet`` (written to a temporary file, then renamed): a row per group, time
    bucket and label, with group, time, label, posts, unsure, share, low, high, method and
    ranked (the group has ``min_posts`` or more)."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("group", pa.string()), ("time", pa.string()), ("label", pa.string()),
                        ("posts", pa.int64()), ("unsure", pa.int64()), ("share", pa.float64()),
                        ("low", pa.float64()), ("high", pa.float64()), ("method", pa.string()),
                        ("ranked", pa.bool_())])
    temp = path.with_name(f".{path.name}.tmp")
    k = len(labels)
    with pq.ParquetWriter(temp, schema) as writer:
        for chunk in chunks:
            count = len(chunk.groups)
            writer.write_table(pa.table({
                "group": np.repeat(np.asarray(chunk.groups, dtype=object), k),
                "time": np.repeat(np.asarray(chunk.times, dtype=object), k),
                "label": np.tile(np.asarray(labels, dtype=object), count),
                "posts": np.repeat(chunk.posts, k), "unsure": np.repeat(chunk.unsure, k),
                "share": chunk.shares.ravel(), "low": chunk.low.ravel(), "high": chunk.high.ravel(),
                "method": np.full(count * k, spec.method, dtype=object),
                "ranked": np.repeat(chunk.posts >= spec.min_posts, k)}, schema=schema))
    os.replace(temp, path)


def profile(predictions: Path, labels: list[str], spec: ProfileSpec, rates: Rates | None, out: Path) -> Path:
    """Every view into ``out/profiles.parquet``: the population and each group, overall and (with
    ``spec.every``) per time bucket."""
    def views() -> Iterator[Chunk]:
        for population in (True, False):
            for by_time in (False, True) if spec.every else (False,):
                yield from grouped(predictions, labels, spec, rates, population, by_time)

    path = out / "profiles.parquet"
    write_parquet(views(), labels, spec, path)
    return path


#: the file of a profile's row errors, all of them (profiles.json lists the first ones)
ERRORS_FILE = "profile_errors.parquet"


def row_errors(predictions: Path, out: Path | None = None, limit: int = 1000
               ) -> tuple[int, list[dict[str, Any]]]:
    """How many records of a Parquet predictions file are errors, and the first ``limit`` of them
    (id, row, user, true label, error); with ``out``, every one of them streamed (DuckDB, out of
    core) into ``out/profile_errors.parquet`` in row order (the file is removed when none)."""
    import duckdb

    where = "FROM read_parquet(?) WHERE error IS NOT NULL"
    columns = 'id, "row", "user", true_label, error'
    with duckdb.connect() as db:
        count = db.execute(f"SELECT count(*) {where}", [str(predictions)]).fetchone()[0]
        found = db.execute(f'SELECT {columns} {where} ORDER BY "row" LIMIT ?', [str(predictions), limit])
        names = [d[0] for d in found.description]
        first = [dict(zip(names, values, strict=True)) for values in found.fetchall()]
        if out is not None:
            target = Path(out) / ERRORS_FILE
            temp = target.with_name(f".{target.name}.tmp")
            if count:
                quoted = str(temp).replace("'", "''")
                db.execute(f"COPY (SELECT {columns} {where} ORDER BY \"row\") TO '{quoted}' (FORMAT parquet)",
                           [str(predictions)])
                temp.replace(target)
            else:
                target.unlink(missing_ok=True)
        return count, first
