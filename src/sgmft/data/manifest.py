"""Post manifests: JSONL or CSV rows of ``id, text, image, label`` (+ optional ``user``,
``group``, ``split``, and any other column, kept as the post's metadata).

`load_manifest` checks every row and either fails with a `ManifestError` listing every problem
by row, or (``skip_invalid=True``) drops the bad rows and reports them in ``Manifest.skipped``.
Rows are numbered as a person counts lines: the first data row of a JSONL file is row 1, of a
CSV file row 2 (the header is row 1).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sgmft import PLACES
from sgmft.data.fields import (
    OPTIONAL,
    REQUIRED,
    canonical_names,
    check_fields,
    check_manifest_file,
    missing_column,
    normalise_label,
    plain_value,
    who,
)
from sgmft.data.image_checks import TEXT_ONLY, ImageChecks, Outcome, check_image
from sgmft.data.posts import Post, PostTable
from sgmft.data.readers import read_rows
from sgmft.text.cleaning import TextConfig, preprocess_texts
from sgmft.words import plural

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowProblem:
    """One problem of one row (with the row's user and label, when it could be read)."""

    row: int
    id: str | None
    problem: str
    user: str | None = None
    label: str | None = None

    def __str__(self) -> str:
        who = f" (id {self.id!r})" if self.id is not None else ""
        return f"row {self.row}{who}: {self.problem}"


class ManifestError(ValueError):
    """A manifest with invalid rows; ``problems`` lists them all."""

    def __init__(self, path: Path, problems: Sequence[RowProblem]):
        self.path = path
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(
            f"{path}: {len(self.problems)} invalid row(s)\n{lines}{more}\n"
            "Fix them, or pass --skip-invalid to skip and count them."
        )


@dataclass
class Manifest:
    """The valid posts of a manifest file (as columns: `PostTable`; a list given is turned into
    one), its label set, and the rows skipped."""

    path: Path
    posts: PostTable
    labels: tuple[str, ...]
    skipped: list[RowProblem] = field(default_factory=list)
    text_only: list[int] = field(default_factory=list)   # rows of the posts without an image, left out

    def __post_init__(self) -> None:
        if not isinstance(self.posts, PostTable):
            self.posts = PostTable.from_posts(self.posts)

    def __len__(self) -> int:
        return len(self.posts)

    @property
    def ids(self) -> list[str]:
        return self.posts.column("id")

    def by_id(self, column: str) -> dict[str, Any]:
        """Post id -> its value of ``column`` (a field of `Post`, or a metadata column)."""
        return dict(zip(self.ids, self.posts.column(column), strict=True))

    def label_indices(self, where: np.ndarray | None = None) -> np.ndarray:
        """(N,) int64 the index in `labels` of the label of every post, or of the posts at
        positions ``where`` (N,); matched by Arrow, no Python object per post (ValueError naming
        a post whose label is not one of them)."""
        table = self.posts.table
        if where is not None:
            table = table.take(pa.array(np.asarray(where, np.int64)))
        found = pc.index_in(table.column("label"), value_set=pa.array(list(self.labels), pa.string()))
        if found.null_count:
            first = int(pc.index(pc.is_null(found), True).as_py())
            raise ValueError(f"post {table.column('id')[first].as_py()!r} has label "
                             f"{table.column('label')[first].as_py()!r}, not one of {list(self.labels)}")
        return found.to_numpy(zero_copy_only=False).astype(np.int64)

    def content_hash(self) -> str:
        """SHA-256 over what the encoders see: ids, cleaned texts and image bytes (not labels)."""
        digest = hashlib.sha256()
        for post_id, tokens, sha in self.posts.rows("id", "tokens", "image_sha256"):
            digest.update(f"{post_id}\x1f{' '.join(tokens)}\x1f{sha}\x1e".encode())
        return digest.hexdigest()

    def post_digests(self) -> dict[str, str]:
        """Per post id, a short hash of everything a result depends on (text, image, label,
        user, group, split, metadata): what tells which rows changed between two versions of a
        manifest."""
        return {p.id: hashlib.sha256("\x1f".join(map(str, (
            p.clean_text, p.image_sha256, p.label, p.user, p.group, p.split, *p.meta))).encode()
            ).hexdigest()[:16] for p in self.posts}

    @property
    def columns(self) -> list[str]:
        """The columns any post has a value in, beyond id, text and image: ``label``, ``user``,
        ``group``, ``split`` and the metadata columns, in that order."""
        table = self.posts.table
        found = [c for c in ("label", "user", "group", "split") if table.column(c).null_count < len(table)]
        meta = table.column("meta")
        return found + sorted({name for chunk in meta.chunks for name in chunk.keys.unique().to_pylist()})

    def data_hash(self) -> str:
        """SHA-256 of the content hash plus every label, user and split: the data of a result."""
        digest = hashlib.sha256(self.content_hash().encode())
        columns = ("id", "label", "user", "split", "group", "meta")
        for post_id, label, user, split, group, meta in self.posts.rows(*columns):
            fields = (post_id, label, user, split) + ((group,) if group else ()) + tuple(meta)
            digest.update(("\x1f".join(map(str, fields)) + "\x1e").encode())
        return digest.hexdigest()


def problem_kind(problem: str) -> str:
    """The kind of a row problem, for counts: its words before any path, quote or colon."""
    return re.split(r"[:'(/]| \d", problem, maxsplit=1)[0].strip()


def skipped_summary(manifest: Manifest, shown: int = 20) -> dict[str, Any]:
    """The rows a manifest load skipped, for result files:
    {"count", "kinds": {kind: n}, "rows": [the first ``shown`` problems]}."""
    problems = manifest.skipped
    kinds = Counter(problem_kind(p.problem) for p in problems)
    return {"count": len(problems), "kinds": dict(kinds.most_common()),
            "rows": [str(p) for p in problems[:shown]]}


def report_skipped(manifest: Manifest, shown: int = 20) -> dict[str, Any]:
    """Log the skipped rows (count, kinds, the first rows); returns `skipped_summary`."""
    summary = skipped_summary(manifest, shown)
    if summary["count"]:
        log.warning("%s: skipped %d invalid row(s) (%s)", manifest.path, summary["count"],
                    ", ".join(f"{n} {kind}" for kind, n in summary["kinds"].items()))
        for row in summary["rows"]:
            log.warning("  %s", row)
        if summary["count"] > shown:
            log.warning("  ... and %d more", summary["count"] - shown)
    return summary


def resolve_image(value: str, manifest: Path, image_root: Path | None, outside_root: bool = False) -> Path:
    """An image path relative to ``image_root`` (or the manifest's folder). It must stay inside
    that root, symbolic links resolved (an absolute path too), unless ``outside_root``; else
    `ValueError` says where it leads."""
    root = image_root or manifest.parent
    path = root / value
    if outside_root:
        return path
    inside, where = root.resolve(), path.resolve()
    if not where.is_relative_to(inside):
        raise ValueError(f"image path {value[:200]!r} leads outside the image root {root} (to {where}); "
                         "move the image under it, or pass --allow-outside-root")
    return path


@dataclass
class Block:
    """A block of a manifest read in order: its valid posts and its rows' problems."""

    posts: list[Post]
    problems: list[RowProblem]


#: rows read, checked and cleaned at a time by `iter_manifest`
BLOCK_ROWS = 4096
#: images to check at once above which the checks run in processes (below, threads)
PROCESS_CHECKS = 2048


def iter_manifest(
    path: str | Path,
    image_root: str | Path | None = None,
    labels: Sequence[str] | None = None,
    require_labels: bool = True,
    read_labels: bool = True,
    text_config: TextConfig | None = None,
    workers: int = 4,
    any_label: bool = False,
    block_rows: int = BLOCK_ROWS,
    skip_through: int = 0,
    outside_root: bool = False,
) -> Iterator[Block]:
    """The manifest's rows checked ``block_rows`` at a time, in order (see `load_manifest` for
    the options): memory follows a block, not the file (but for one id -> row entry per post,
    which finds a repeated id anywhere). Image checks run in processes for large blocks. Rows
    up to number ``skip_through`` (done by a killed run) are read for their ids only. A row
    with an empty or absent image is a text-only post (``Post.image`` None); a misnamed column
    (``img``) is a `ValueError` on the first row."""
    path = Path(path)
    check_manifest_file(path)
    root = Path(image_root) if image_root is not None else None
    label_set = None if any_label else tuple(normalise_label(label) for label in (labels or PLACES))
    first_row_of: dict[str, int] = {}
    checks = ImageChecks.for_manifest(path)
    with contextlib.ExitStack() as stack:
        pools: list[ProcessPoolExecutor] = []

        def processes(todo: int) -> ProcessPoolExecutor | None:
            """A process pool (started once, on the first block with many images to check)."""
            if todo <= PROCESS_CHECKS and not pools:
                return None
            if not pools:
                pools.append(stack.enter_context(ProcessPoolExecutor(
                    max_workers=min(workers, os.cpu_count() or 1), mp_context=get_context("spawn"))))
            return pools[0]

        rows = read_rows(path)
        posts_seen = 0
        while True:
            problems: list[RowProblem] = []
            candidates: list[tuple[int, dict, Path]] = []
            read = 0
            for number, row, problem in itertools.islice(rows, block_rows):
                read += 1
                if row is None:
                    if number > skip_through:
                        problems.append(RowProblem(number, None, problem or "malformed row"))
                    continue
                row = canonical_names(row)
                if not posts_seen:
                    _check_columns(path, row)
                posts_seen += 1
                if not read_labels:
                    row.pop("label", None)
                post_id = str(row["id"]).strip() if row.get("id") not in (None, "") else None
                row_problem = check_fields(row, label_set, require_labels and read_labels)
                if number <= skip_through:      # registered as an uninterrupted run registered it
                    if row_problem is None and post_id is not None:
                        first_row_of.setdefault(post_id, number)
                    continue
                if row_problem is None and post_id in first_row_of:
                    row_problem = f"duplicate id, first seen in row {first_row_of[post_id]}"
                if row_problem is not None:
                    problems.append(RowProblem(number, post_id, row_problem, *who(row)))
                    continue
                first_row_of[post_id] = number  # type: ignore[index]
                image = str(row.get("image") or "").strip()
                try:
                    candidates.append((number, row, resolve_image(image, path, root, outside_root)
                                       if image else None))
                except ValueError as exc:
                    problems.append(RowProblem(number, post_id, str(exc), *who(row)))
            if not read:
                return
            if not candidates and not problems:   # rows done by a killed run, or blank
                continue
            images = [image for _, _, image in candidates if image is not None]
            checked = iter(checks.check(images, check_image, workers, processes))
            outcomes = [TEXT_ONLY if image is None else next(checked) for _, _, image in candidates]
            texts = [str(row["text"]) for (_, row, _), outcome in zip(candidates, outcomes, strict=True)
                     if outcome.problem is None]
            tokens = iter(preprocess_texts(texts, text_config, processes(len(texts))))
            yield _block(candidates, outcomes, tokens, problems)


def _check_columns(path: Path, row: dict) -> None:
    """A misnamed column is one error for the whole file (`missing_column`)."""
    problem = missing_column(list(row))
    if problem is not None:
        raise ValueError(f"{path}: {problem}")


def _block(candidates: list[tuple[int, dict, Path | None]], outcomes: list[Outcome],
           tokens_of: Iterator[tuple[str, ...]], problems: list[RowProblem]) -> Block:
    """The posts and problems of a block; ``tokens_of`` gives the tokens of each candidate whose
    image passed, in order."""
    posts: list[Post] = []
    for (number, row, image), outcome in zip(candidates, outcomes, strict=True):
        post_id = str(row["id"]).strip()
        if outcome.problem is not None:
            problems.append(RowProblem(number, post_id, outcome.problem, *who(row)))
            continue
        tokens = tuple(map(sys.intern, next(tokens_of)))
        if not tokens:
            problems.append(RowProblem(number, post_id, "empty text after cleaning", *who(row)))
            continue
        posts.append(_make_post(row, number, image, tokens, outcome))
    problems.sort(key=lambda p: p.row)
    return Block(posts, problems)


def load_manifest(
    path: str | Path,
    image_root: str | Path | None = None,
    labels: Sequence[str] | None = None,
    require_labels: bool = True,
    read_labels: bool = True,
    skip_invalid: bool = False,
    text_config: TextConfig | None = None,
    workers: int = 4,
    any_label: bool = False,
    text_only: bool = False,
    outside_root: bool = False,
) -> Manifest:
    """Read and check a manifest; raise `ManifestError` on any bad row unless ``skip_invalid``.

    labels: the declared label set (default: the paper's eight places), compared lower-cased.
    require_labels: a missing label is an error (False for prediction manifests).
    read_labels: False ignores the label column altogether (prediction needs none).
    any_label: a label outside ``labels`` is kept as the post's true label, not an error (a
        prediction manifest's posts may carry labels the run never learned).
    text_only: keep the posts without an image; else they are counted in
        ``Manifest.text_only`` and left out (features, training and evaluation use posts with both).
    outside_root: image paths may lead outside the image root (`resolve_image`).
    """
    path = Path(path)
    parts: list[PostTable] = []
    problems: list[RowProblem] = []
    without_image: list[int] = []
    for block in iter_manifest(path, image_root, labels, require_labels, read_labels, text_config, workers,
                               any_label, outside_root=outside_root):
        kept = block.posts if text_only else [p for p in block.posts if p.image is not None]
        without_image += [p.row for p in block.posts if p.image is None and not text_only]
        parts.append(PostTable.from_posts(kept))
        problems += block.problems
    posts = PostTable.concat(parts)
    if without_image:
        log.warning("%s: %s (no image) left out: features, training and evaluation use posts with both; "
                    "`sgmft predict` and `profile` answer text-only posts from their text",
                    path, plural(len(without_image), "text-only post"))
    if not posts and not problems:
        if without_image:
            raise ValueError(f"{path} holds no posts with an image (every post is text-only); features and "
                             "training need posts with images")
        raise ValueError(f"{path} holds no posts (it is empty, or holds only a header or blank lines)")
    if problems and not skip_invalid:
        raise ManifestError(path, problems)
    label_set = tuple(normalise_label(label) for label in (labels or PLACES))
    return Manifest(path=path, posts=posts, labels=label_set, skipped=problems, text_only=without_image)


def _make_post(row: dict, number: int, image: Path | None, tokens: tuple[str, ...], outcome: Outcome) -> Post:
    def optional(name: str) -> str | None:
        return plain_value(row.get(name))

    known = {*REQUIRED, *OPTIONAL}
    meta = tuple(sorted((str(name), value) for name, value in
                        ((name, plain_value(raw)) for name, raw in row.items() if name not in known)
                        if value is not None))

    label = optional("label")
    split = optional("split")
    return Post(
        id=str(row["id"]).strip(),
        text=str(row["text"]),
        image=image,
        label=normalise_label(label) if label is not None else None,
        user=optional("user"),
        group=optional("group"),
        split=split.lower() if split is not None else None,
        row=number,
        tokens=tokens,
        image_sha256=outcome.sha256,   # type: ignore[arg-type]
        image_phash=outcome.phash,
        image_layout=outcome.layout,
        meta=meta,
    )


