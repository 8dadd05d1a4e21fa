"""Post manifests: JSONL or CSV rows of ``id, text, image, label`` (+ optional ``user``,
``group``, ``split``).

`load_manifest` checks every row and either fails with a `ManifestError` listing every problem
by row, or (``skip_invalid=True``) drops the bad rows and reports them in ``Manifest.skipped``.
Rows are numbered as a person counts lines: the first data row of a JSONL file is row 1, of a
CSV file row 2 (the header is row 1).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgmft import PLACES
from sgmft.data.image_checks import ImageChecks
from sgmft.data.images import ImageError, decode_image, read_image_bytes
from sgmft.limits import LIMITS
from sgmft.text.cleaning import TextConfig, preprocess_text

log = logging.getLogger(__name__)
_SURROGATE = re.compile("[\ud800-\udfff]")
REQUIRED = ("id", "text", "image")
OPTIONAL = ("label", "user", "group", "split")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Post:
    """One valid row. ``tokens`` is the cleaned, segmented text; ``image_sha256`` its image's hash."""

    id: str
    text: str
    image: Path
    label: str | None
    user: str | None
    split: str | None
    row: int
    tokens: tuple[str, ...]
    image_sha256: str
    group: str | None = None    # an event, topic or any unit that should not straddle a split

    @property
    def clean_text(self) -> str:
        """Tokens joined by spaces: the text the encoders see."""
        return " ".join(self.tokens)


@dataclass(frozen=True)
class RowProblem:
    """One problem of one row."""

    row: int
    id: str | None
    problem: str

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
    """The valid posts of a manifest file, its label set, and the rows skipped."""

    path: Path
    posts: list[Post]
    labels: tuple[str, ...]
    skipped: list[RowProblem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.posts)

    @property
    def ids(self) -> list[str]:
        return [post.id for post in self.posts]

    def label_indices(self) -> list[int]:
        """Class index of every post (posts must be labelled)."""
        index = {label: i for i, label in enumerate(self.labels)}
        return [index[post.label] for post in self.posts]  # type: ignore[index]

    def content_hash(self) -> str:
        """SHA-256 over what the encoders see: ids, cleaned texts and image bytes (not labels)."""
        digest = hashlib.sha256()
        for post in self.posts:
            digest.update(f"{post.id}\x1f{post.clean_text}\x1f{post.image_sha256}\x1e".encode())
        return digest.hexdigest()

    def post_digests(self) -> dict[str, str]:
        """Per post id, a short hash of everything a result depends on (text, image, label,
        user, group, split): what tells which rows changed between two versions of a manifest."""
        return {p.id: hashlib.sha256("\x1f".join(map(str, (
            p.clean_text, p.image_sha256, p.label, p.user, p.group, p.split))).encode()).hexdigest()[:16]
            for p in self.posts}

    def data_hash(self) -> str:
        """SHA-256 of the content hash plus every label, user and split: the data of a result."""
        digest = hashlib.sha256(self.content_hash().encode())
        for post in self.posts:
            fields = (post.id, post.label, post.user, post.split) + ((post.group,) if post.group else ())
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


def _has_bad_encoding(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _depth(value: object) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, a flat object 1)."""
    depth, level = 0, [value]
    while True:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            return depth
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]


def _read_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield ``(row number, fields or None, problem or None)`` for every row of the file."""
    if path.suffix.lower() == ".csv":
        raw = path.read_bytes()
        text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")
        yield from _read_csv(text)
    else:
        with open(path, "rb") as handle:
            yield from _read_jsonl(handle)


def _records(handle: io.BufferedReader, limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of every ``\\n``-ended record, None for one over ``limit`` bytes
    (read past in pieces, never held). Only ``\\n`` ends a record: U+2028 or U+0085 inside a
    JSON string are text."""
    number = 0
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = handle.readline(limit + 1)
            yield number, None
            continue
        yield number, line


def _read_jsonl(handle: io.BufferedReader) -> Iterator[tuple[int, dict | None, str | None]]:
    limit = LIMITS.field_bytes
    for number, raw in _records(handle, limit):
        if raw is None:
            yield number, None, f"line longer than the limit of {limit} bytes (SGMFT_LIMIT_FIELD_BYTES)"
            continue
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            yield number, None, "bad encoding: the line is not valid UTF-8"
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, None, f"malformed row: invalid JSON ({exc.msg} at column {exc.colno})"
            continue
        except RecursionError:
            row = None
        if row is None or _depth(row) > LIMITS.json_depth:
            yield number, None, f"malformed row: JSON nested deeper than {LIMITS.json_depth} levels"
            continue
        if not isinstance(row, dict):
            yield number, None, "malformed row: a JSON object is expected"
            continue
        yield number, row, None


def _read_csv(text: str) -> Iterator[tuple[int, dict | None, str | None]]:
    csv.field_size_limit(LIMITS.field_bytes)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except (StopIteration, csv.Error):
        return
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, None, f"malformed row: {exc} (SGMFT_LIMIT_FIELD_BYTES)"
            continue
        number = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            yield number, None, f"malformed row: {len(values)} fields, the header has {len(header)}"
            continue
        row = dict(zip(header, values, strict=True))
        if any(_has_bad_encoding(v) for v in values):
            yield number, None, "bad encoding: the row is not valid UTF-8"
            continue
        yield number, row, None


def resolve_image(value: str, manifest: Path, image_root: Path | None) -> Path:
    """An image path relative to ``image_root`` (or the manifest's folder); absolute kept."""
    path = Path(value)
    if path.is_absolute():
        return path
    return (image_root or manifest.parent) / path


def _check_image(path: Path) -> tuple[str | None, str | None]:
    """(sha256, None) for a usable image, (None, problem) otherwise."""
    try:
        data = read_image_bytes(path)
    except ImageError as exc:
        return None, str(exc)
    try:
        decode_image(data)
    except ImageError as exc:
        return None, f"bad image {path}: {exc}"
    return hashlib.sha256(data).hexdigest(), None


def _normalise_label(value: object) -> str:
    return str(value).strip().lower()


def load_manifest(
    path: str | Path,
    image_root: str | Path | None = None,
    labels: Sequence[str] | None = None,
    require_labels: bool = True,
    read_labels: bool = True,
    skip_invalid: bool = False,
    text_config: TextConfig | None = None,
    workers: int = 4,
) -> Manifest:
    """Read and check a manifest; raise `ManifestError` on any bad row unless ``skip_invalid``.

    labels: the declared label set (default: the paper's eight places), compared lower-cased.
    require_labels: a missing label is an error (False for prediction manifests).
    read_labels: False ignores the label column altogether (prediction needs none).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    root = Path(image_root) if image_root is not None else None
    label_set = tuple(_normalise_label(label) for label in (labels or PLACES))
    problems: list[RowProblem] = []
    candidates: list[tuple[int, dict, Path]] = []
    first_row_of: dict[str, int] = {}
    for number, row, problem in _read_rows(path):
        if row is None:
            problems.append(RowProblem(number, None, problem or "malformed row"))
            continue
        if not read_labels:
            row.pop("label", None)
        row_problem = _check_fields(row, label_set, require_labels and read_labels)
        post_id = str(row["id"]).strip() if row.get("id") not in (None, "") else None
        if row_problem is None and post_id in first_row_of:
            row_problem = f"duplicate id, first seen in row {first_row_of[post_id]}"
        if row_problem is not None:
            problems.append(RowProblem(number, post_id, row_problem))
            continue
        first_row_of[post_id] = number  # type: ignore[index]
        candidates.append((number, row, resolve_image(str(row["image"]).strip(), path, root)))

    checks = ImageChecks.for_manifest(path).check([image for _, _, image in candidates], _check_image,
                                                  workers)
    posts: list[Post] = []
    for (number, row, image), (sha, image_problem) in zip(candidates, checks, strict=True):
        post_id = str(row["id"]).strip()
        if image_problem is not None:
            problems.append(RowProblem(number, post_id, image_problem))
            continue
        tokens = tuple(preprocess_text(str(row["text"]), text_config))
        if not tokens:
            problems.append(RowProblem(number, post_id, "empty text after cleaning"))
            continue
        posts.append(_make_post(row, number, image, tokens, sha))  # type: ignore[arg-type]

    problems.sort(key=lambda p: p.row)
    if problems and not skip_invalid:
        raise ManifestError(path, problems)
    return Manifest(path=path, posts=posts, labels=label_set, skipped=problems)


def _check_fields(row: dict, labels: tuple[str, ...], require_labels: bool) -> str | None:
    """The first field problem of a parsed row, or None."""
    for name in REQUIRED:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return f"missing field {name!r}"
    if not isinstance(row["text"], str) or not isinstance(row["image"], str):
        return "malformed row: 'text' and 'image' must be strings"
    if isinstance(row["id"], bool) or not isinstance(row["id"], str | int):
        return "malformed row: 'id' must be a string or a whole number"
    for name in (*REQUIRED, *OPTIONAL):
        if isinstance(row.get(name), str) and _SURROGATE.search(row[name]):
            return f"bad encoding: {name!r} holds an unpaired UTF-16 surrogate"
    for name in OPTIONAL:
        if isinstance(row.get(name), dict | list):
            return f"malformed row: {name!r} must be a plain value"
    if len(row["text"]) > LIMITS.text_chars:
        return (f"text of {len(row['text'])} characters exceeds the limit of {LIMITS.text_chars} "
                "(SGMFT_LIMIT_TEXT_CHARS)")
    label = row.get("label")
    if label in (None, ""):
        if require_labels:
            return "missing field 'label'"
    elif _normalise_label(label) not in labels:
        return f"unknown label {label!r} (expected one of: {', '.join(labels)})"
    split = row.get("split")
    if split not in (None, "") and str(split).strip().lower() not in SPLITS:
        return f"unknown split {split!r} (expected one of: {', '.join(SPLITS)})"
    return None


def _make_post(row: dict, number: int, image: Path, tokens: tuple[str, ...], sha: str) -> Post:
    def optional(name: str) -> str | None:
        value = row.get(name)
        return None if value in (None, "") else str(value).strip()

    label = optional("label")
    split = optional("split")
    return Post(
        id=str(row["id"]).strip(),
        text=str(row["text"]),
        image=image,
        label=_normalise_label(label) if label is not None else None,
        user=optional("user"),
        group=optional("group"),
        split=split.lower() if split is not None else None,
        row=number,
        tokens=tokens,
        image_sha256=sha,
    )
