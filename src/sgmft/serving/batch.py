"""Batch prediction over a manifest, streamed: rows are read, checked, predicted and written a
block at a time (`sgmft.data.manifest.iter_manifest`), so memory stays flat however long the
manifest, and a killed run continues where it stopped (``resume``), neither repeating nor losing
a row.

Features come from a feature cache that holds the post (same id, cleaned text and image bytes,
checked per post by digest): the run's own, or any given; otherwise the post is encoded. The
output format follows the file's extension (`FORMATS`; `sgmft.serving.writers`). While it runs,
records go to ``OUT.partial`` and the progress to ``OUT.progress.json`` after every block; the
finished file replaces ``OUT`` at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sgmft.data.fields import check_manifest_file
from sgmft.data.manifest import Block, Post, iter_manifest
from sgmft.data.times import wall_clock
from sgmft.encoders.cache import IMPORTED, FeatureCache
from sgmft.encoders.features import find_cache
from sgmft.io import StorageError, atomic_write_json, check_writable, storage_error
from sgmft.progress import progress_bar
from sgmft.serving.batch_shift import drift_sample, learn_shift, save_sample, write_drift
from sgmft.serving.post_features import cached as cached_features
from sgmft.serving.post_features import encoded as encoded_features
from sgmft.serving.post_features import error_record, record
from sgmft.serving.predictor import Features, Predictor
from sgmft.serving.writers import open_writer
from sgmft.training.splitfile import RunSplit

log = logging.getLogger(__name__)

#: the output formats, by file extension
FORMATS = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class BatchSummary:
    """What a batch prediction did: posts predicted, rows with an error record, invalid rows
    left out (``skip_invalid``), posts whose features came from a cache, and the rows that a
    resumed run found done."""

    predicted: int = 0
    errors: int = 0
    left_out: int = 0
    from_cache: int = 0
    resumed_rows: int = 0
    kinds: dict[str, int] = field(default_factory=dict)   # problems by kind
    drift: dict[str, Any] | None = None   # the batch's drift report (`write_drift`)
    weighted_sets: bool = False            # the sets were weighted for the batch's shift (`learn_shift`)





def _settings(predictor: Predictor, manifest: Path, options: dict[str, Any]) -> str:
    """What a resumed run must share with the killed one: the run, the manifest file (size and
    modification time) and the options."""
    info = manifest.stat()
    text = json.dumps({"run": str(predictor.run.folder.resolve()), "manifest": str(manifest.resolve()),
                       "size": info.st_size, "mtime": info.st_mtime_ns, **options},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _caches(predictor: Predictor, folders: tuple[Path, ...], manifest: Path) -> list[FeatureCache]:
    """The feature caches that may hold the manifest's posts: the run's own and ``folders``,
    of the run's encoder (a run on imported features: any imported cache)."""
    from sgmft.encoders.cache import load_cache, read_header

    data = predictor.run.config.data
    encoder = IMPORTED if predictor.imported else data.encoder
    found, legacy = [], False
    for folder in (Path(predictor.run.info["features"]["folder"]), *folders):
        header = read_header(folder)
        if header is None or not header.get("complete"):
            continue
        same = header["encoder_identity"]["name"] == encoder and (
            encoder == IMPORTED or header["encoder_identity"].get("options", {}).get("checkpoint")
            == (data.checkpoint or None))
        dims = header.get("dims") == predictor.run.info["features"]["dims"]
        if same and dims:
            try:
                cache = load_cache(folder)
            except (FileNotFoundError, ValueError, RuntimeError) as exc:
                log.warning("feature cache %s not used: %s", folder, exc)
                continue
            legacy |= cache.digests is None
            found += [cache] if cache.digests is not None else []
    whole = _whole_manifest_cache(predictor, manifest) if legacy else None
    return found + ([whole] if whole is not None else [])


def _whole_manifest_cache(predictor: Predictor, manifest: Path) -> FeatureCache | None:
    """A cache written before caches kept per-post digests serves a manifest only when it holds
    exactly the manifest's posts (its content hash; the manifest read whole, once)."""
    from sgmft.data.manifest import load_manifest

    data = predictor.run.config.data
    loaded = load_manifest(manifest, labels=predictor.labels, require_labels=False, skip_invalid=True,
                           any_label=True)
    return find_cache(loaded, IMPORTED if predictor.imported else data.encoder, data.checkpoint,
                      predictor.sequence)


@dataclass
class BlockPredictor:
    """Predicts the posts of blocks: a run's `Predictor`, the caches that may hold the posts'
    features, the run's split and the options. What a Ray actor holds, too."""

    predictor: Predictor
    caches: list[FeatureCache]
    split: RunSplit | None
    options: dict[str, Any]

    def __call__(self, posts: list[Post]) -> tuple[list[dict[str, Any]], int]:
        """The records of ``posts`` (not in order) and how many came from a cache."""
        return _predict_posts(self.predictor, posts, self.caches, self.split, self.options)


def _problem_records(block: Block, skip_invalid: bool) -> list[dict[str, Any]]:
    return [] if skip_invalid else [error_record(p, p.problem) for p in block.problems]


def _predict_posts(predictor: Predictor, posts: list[Post], caches: list[FeatureCache],
                   split: RunSplit | None, options: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    records: list[dict[str, Any]] = []

    def answer(chosen: list[Post], features: Features | None) -> None:
        if features is None:
            return
        ids = [p.id for p in chosen]
        predictions = predictor.predict_features(features, ids, options["coverage"],
                                                 options["min_confidence"])
        parts = split.parts(ids) if split is not None else [None] * len(ids)
        for post, prediction, part in zip(chosen, predictions, parts, strict=True):
            records.append(record(post.id, post.row, user=post.user, true_label=post.label,
                                   split=part, **prediction.to_dict(), **kept[post.id]))

    kept, posts = _kept_columns(posts, options.get("by"), options.get("time"), records)
    order, cached = cached_features(predictor, caches, posts)
    answer([posts[i] for i in order], cached)
    taken = set(order)
    rest = [p for i, p in enumerate(posts) if i not in taken]
    size = predictor.batch_size
    for start in range(0, len(rest), size):       # images decoded a batch at a time, not a block
        ready, encoded, errors = encoded_features(predictor, rest[start:start + size])
        records += errors
        answer(ready, encoded)
    return records, len(order)


def _kept_columns(posts: list[Post], by: str | None, time: str | None, records: list[dict[str, Any]]
                  ) -> tuple[dict[str, dict[str, Any]], list[Post]]:
    """What profiles read of each post besides its prediction: its value in the ``by`` column
    (``by``) and its time in the ``time`` column as a wall clock (``time``, `sgmft.data.times`).
    A post whose time cannot be read gets an error record (in ``records``) and is not predicted."""
    kept: dict[str, dict[str, Any]] = {}
    ready = []
    for post in posts:
        fields: dict[str, Any] = {}
        if by is not None:
            fields["by"] = post.value(by)
        if time is not None:
            value = post.value(time)
            try:
                fields["time"] = None if value is None else wall_clock(value)
            except ValueError as exc:
                records.append(error_record(post, f"column {time!r}: {exc}") | fields)
                continue
        kept[post.id] = fields
        ready.append(post)
    return kept, ready


Predicted = Iterator[tuple[Block, list[dict[str, Any]], int]]


def local_windows(blocks: Iterator[Block], predict: BlockPredictor) -> Predicted:
    """Each block with its posts' records and the count from a cache, predicted here."""
    for block in blocks:
        yield block, *predict(block.posts)


def predict_manifest(predictor: Predictor, manifest_path: str | Path, out: str | Path,
                     image_root: str | Path | None = None, batch_size: int = 64,
                     labels: list[str] | None = None, skip_invalid: bool = False,
                     progress: bool = True, coverage: float | None = None,
                     min_confidence: float | None = None, resume: bool = False,
                     caches: tuple[Path, ...] = (), block_rows: int = 4096, weighted_sets: bool = True,
                     by: str | None = None, time: str | None = None, outside_root: bool = False,
                     windows: Callable[[Iterator[Block], BlockPredictor], Predicted] = local_windows
                     ) -> BatchSummary:
    """Predict every valid row of a manifest into ``out`` (see the module docstring); a bad row
    gets an ``error`` record with its id, user and label as far as the row had them (or, with
    ``skip_invalid``, is left out and counted). Never stops at a bad row; a bad header (a CSV
    naming a column twice) is an error.

    Records carry the post's true label (``true_label``, any label, known to the run or not)
    and ``split``: the part of the run's split the post was in for the final model (train, val
    or test); with ``coverage`` the prediction set (``weighted_sets``: weighted split-conformal
    sets whose density ratios are learned from a sample of the batch first, `learn_shift`; the
    local path only), with ``min_confidence`` "unsure" below it. ``by`` and ``time`` name
    columns whose values records carry as ``by`` and ``time`` (`sgmft profile`).
    ``windows`` predicts the blocks (`local_windows` here; `sgmft.serving.ray_predict` on Ray).
    ``outside_root``: image paths may lead outside the image root (`resolve_image`). A failed
    write is a `StorageError` that says what is kept for ``resume``.
    """
    predictor.set_threshold(coverage)   # a run that cannot give sets says so before any work
    manifest_path, out = Path(manifest_path), Path(out)
    check_output(out)
    check_manifest_file(manifest_path)
    check_writable(out.parent)
    predictor.batch_size = batch_size
    weighted_sets = weighted_sets and windows is local_windows    # Ray's actors answer with plain sets
    options = {"coverage": coverage, "min_confidence": min_confidence, "skip_invalid": skip_invalid,
               "labels": labels, "image_root": str(image_root), "min_gain": predictor.min_gain,
               "format": out.suffix.lower(), "weighted_sets": weighted_sets, "by": by, "time": time,
               "outside_root": outside_root}
    progress_file = out.with_name(out.name + ".progress.json")
    settings = _settings(predictor, manifest_path, options)
    saved = _saved_progress(progress_file, settings) if resume else None
    done_rows = saved["rows_done"] if saved else 0
    summary = BatchSummary(**saved["summary"]) if saved else BatchSummary()
    summary.resumed_rows = done_rows
    kept = tuple(name for name, column in (("by", by), ("time", time)) if column is not None)
    with _writing(out, done_rows):
        writer = open_writer(out, predictor.labels, saved["state"] if saved else None, kept)
    predict = BlockPredictor(predictor, _caches(predictor, caches, manifest_path), predictor.run.split,
                             options)
    drift_file = out.with_name(out.name + ".drift-sample.npz")
    predictor.drift = drift_sample(predictor, drift_file if saved else None)
    if coverage is not None and weighted_sets:
        def every_block() -> Iterator[Block]:
            return iter_manifest(manifest_path, image_root, labels or predictor.labels, require_labels=False,
                                 any_label=True, block_rows=block_rows, outside_root=outside_root)

        predictor.weighting = learn_shift(predictor, every_block, predict.caches)
        summary.weighted_sets = predictor.weighting is not None
    bar = progress_bar(_lines(manifest_path), "predict", "row", disable=not progress, initial=done_rows)
    blocks = iter_manifest(manifest_path, image_root, labels or predictor.labels, require_labels=False,
                           any_label=True, block_rows=block_rows, skip_through=done_rows,
                           outside_root=outside_root)
    for block, predicted, from_cache in windows(_checked(blocks, manifest_path), predict):
        records = sorted(_problem_records(block, skip_invalid) + predicted, key=lambda r: r["row"])
        summary.from_cache += from_cache
        last = max([p.row for p in block.posts] + [p.row for p in block.problems])
        with _writing(out, done_rows):
            writer.write(records)
            state = writer.checkpoint()
            if predictor.drift is not None:
                save_sample(drift_file, predictor.drift)
            _count(summary, block, records, skip_invalid)
            atomic_write_json(progress_file, {"settings": settings, "rows_done": last,
                                              "state": state, "summary": asdict(summary)})
        done_rows = last
        bar.update(len(block.posts) + len(block.problems))
    bar.close()
    with _writing(out, done_rows):
        writer.finish()
    summary.drift = write_drift(predictor, out.with_name(out.name + ".drift.json"))
    predictor.drift = predictor.weighting = None
    progress_file.unlink(missing_ok=True)
    drift_file.unlink(missing_ok=True)
    return summary


def check_output(out: Path) -> None:
    """``--out`` must name a file of a known format (`FORMATS`), not a folder; `ValueError`
    otherwise."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; name a file in it, such as {out / 'predictions.jsonl'}")
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"--out {out}: its extension chooses the format; use {', '.join(FORMATS)}")


@contextmanager
def _writing(out: Path, done_rows: int) -> Iterator[None]:
    """Turn a failed write (a full disk, a file-size limit, a read-only folder) into one
    `StorageError` that says what is kept for ``--resume``."""
    try:
        yield
    except StorageError as exc:
        raise StorageError(exc.errno, f"{exc}{_kept(out, done_rows)}") from None
    except OSError as exc:
        problem = storage_error(out, exc) or f"cannot write {out}: {exc.strerror or exc}"
        raise StorageError(getattr(exc, "errno", None), f"{problem}{_kept(out, done_rows)}") from None


def _kept(out: Path, done_rows: int) -> str:
    if not done_rows:
        return f"; no block was finished ({out.name}.partial, if there, can go)"
    return (f"; the predictions of the first {done_rows:,} rows are kept in {out.name}.partial: run the "
            "same command with --resume to go on from there")


def _checked(blocks: Iterator[Block], path: Path) -> Iterator[Block]:
    """The blocks, failing on a header that names a column twice (no row could be read right)."""
    for block in blocks:
        header = [p for p in block.problems if p.row == 1 and p.problem.startswith("malformed header")]
        if header:
            raise ValueError(f"{path}: {header[0].problem}")
        yield block


def _lines(path: Path) -> int:
    """The rows of a manifest, about (its lines; a CSV's header and any line breaks inside fields
    count too): the progress bar's total."""
    count = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            count += block.count(b"\n")
    return count


def _count(summary: BatchSummary, block: Block, records: list[dict[str, Any]], skip_invalid: bool) -> None:
    from sgmft.data.manifest import problem_kind

    errors = sum("error" in r for r in records)
    summary.errors += errors
    summary.predicted += len(records) - errors
    if skip_invalid:
        summary.left_out += len(block.problems)
    for problem in block.problems:
        kind = problem_kind(problem.problem)
        summary.kinds[kind] = summary.kinds.get(kind, 0) + 1


def _saved_progress(path: Path, settings: str) -> dict[str, Any] | None:
    """The progress of a killed run of the same settings, or None (then it starts over)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if saved.get("settings") != settings:
        log.warning("%s belongs to another prediction (other run, manifest or options): starting over", path)
        return None
    log.info("resuming after row %d (%d posts predicted before)", saved["rows_done"],
             saved["summary"]["predicted"])
    return saved
