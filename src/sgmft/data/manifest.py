"""Post manifests: JSONL or CSV rows of ``id, text, image, label`` (+ optional ``user``, ``split``).

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
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sgmft import PLACES
from sgmft.data.images import ImageError, decode_image
from sgmft.text.cleaning import TextConfig, preprocess_text

REQUIRED = ("id", "text", "image")
OPTIONAL = ("label", "user", "split")
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

    def data_hash(self) -> str:
        """SHA-256 of the content hash plus every label, user and split: the data of a result."""
        digest = hashlib.sha256(self.content_hash().encode())
        for post in self.posts:
            digest.update(f"{post.id}\x1f{post.label}\x1f{post.user}\x1f{post.split}\x1e".encode())
        return digest.hexdigest()


def _has_bad_encoding(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _read_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield ``(row number, fields or None, problem or None)`` for every row of the file."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    text = raw.decode("utf-8", errors="surrogateescape")
    if path.suffix.lower() == ".csv":
        yield from _read_csv(text)
    else:
        yield from _read_jsonl(text)


def _read_jsonl(text: str) -> Iterator[tuple[int, dict | None, str | None]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if _has_bad_encoding(line):
            yield number, None, "bad encoding: the line is not valid UTF-8"
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, None, f"malformed row: invalid JSON ({exc.msg} at column {exc.colno})"
            continue
        if not isinstance(row, dict):
            yield number, None, "malformed row: a JSON object is expected"
            continue
        yield number, row, None


def _read_csv(text: str) -> Iterator[tuple[int, dict | None, str | None]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        return
    for values in reader:
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
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"missing image: {path}"
    except OSError as exc:
        return None, f"unreadable image {path}: {exc.strerror or exc}"
    if not data:
        return None, f"image is an empty file: {path}"
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

    with ThreadPoolExecutor(max_workers=workers) as pool:
        checks = list(pool.map(_check_image, [image for _, _, image in candidates]))
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
        split=split.lower() if split is not None else None,
        row=number,
        tokens=tokens,
        image_sha256=sha,
    )
