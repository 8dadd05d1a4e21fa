"""Checking a manifest row's fields: what each field must hold, in words a user can act on
(`sgmft.data.manifest` reads the rows and makes the posts)."""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from sgmft.data.times import parse_time
from sgmft.limits import LIMITS

_SURROGATE = re.compile("[\ud800-\udfff]")
REQUIRED = ("id", "text")
#: an empty or absent image makes a text-only post
OPTIONAL = ("image", "label", "user", "group", "split")
SPLITS = ("train", "val", "test")
#: the columns whose names are read whatever their case and surrounding spaces
KNOWN = (*REQUIRED, *OPTIONAL, "time")
#: names people give the known columns, for "did you mean"
SYNONYMS = {"id": ("post_id", "postid", "mid", "uid"), "text": ("content", "body", "message", "caption"),
            "image": ("img", "image_path", "imagepath", "picture", "photo", "pic", "path", "file"),
            "label": ("class", "category", "place", "location", "target")}


def canonical_names(row: dict) -> dict:
    """The row with its column names stripped of spaces, and a known column's name lower-cased
    (``Label `` is ``label``) unless the row holds that exact name too."""
    if all(isinstance(name, str) and name == name.strip() and (name.lower() not in KNOWN or name in KNOWN)
           for name in row):
        return row
    renamed: dict = {}
    for name, value in row.items():
        plain = name.strip() if isinstance(name, str) else name
        if isinstance(plain, str) and plain.lower() in KNOWN and plain.lower() not in row:
            plain = plain.lower()
        renamed.setdefault(plain, value)
    return renamed


def missing_column(columns: list[str]) -> str | None:
    """When a known column is absent and another column looks like it (``img`` for ``image``),
    the sentence that says so; else None. Checked once per file, on its header (CSV) or first
    row (JSONL), so that a misnamed column is one error, not one per row."""
    present = [str(c) for c in columns]
    for name in (*REQUIRED, "image", "label"):
        if name in present:
            continue
        close = [c for c in present if c.lower() in SYNONYMS.get(name, ())]
        close = close or difflib.get_close_matches(name, [c for c in present if c not in KNOWN], 1, 0.75)
        if close:
            return (f"no column {name!r}; did you mean {close[0]!r}? Rename that column to {name!r} "
                    f"(the columns are: {', '.join(map(repr, present[:20]))})")
    return None


def normalise_label(value: object) -> str:
    return str(value).strip().lower()


def check_fields(row: dict, labels: tuple[str, ...] | None, require_labels: bool) -> str | None:
    """The first field problem of a parsed row, or None (``labels`` None: any label)."""
    for name in REQUIRED:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return f"missing field {name!r}"
    if not isinstance(row["text"], str) or not isinstance(row.get("image", ""), str | None):
        return "malformed row: 'text' and 'image' must be strings"
    if isinstance(row["id"], bool) or not isinstance(row["id"], str | int):
        return "malformed row: 'id' must be a string or a whole number"
    for name, value in row.items():
        if (isinstance(value, str) and _SURROGATE.search(value)) or _SURROGATE.search(str(name)):
            return f"bad encoding: {str(name)[:50]!r} holds an unpaired UTF-16 surrogate"
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
    elif labels is not None and normalise_label(label) not in labels:
        return f"unknown label {label!r} (expected one of: {', '.join(labels)})"
    split = row.get("split")
    if split not in (None, "") and str(split).strip().lower() not in SPLITS:
        return f"unknown split {split!r} (expected one of: {', '.join(SPLITS)})"
    return time_problem(row, "time")


def time_problem(row: dict, column: str) -> str | None:
    """What is wrong with a row's value in a time column (`sgmft.data.times`), or None (no value
    is no problem)."""
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        parse_time(value)
    except ValueError as exc:
        return f"column {column!r}: {exc}"
    return None


def plain_value(value: Any) -> str | None:
    """A field's value as text: None when empty, JSON for a nested value, else stripped."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value).strip()


def who(row: dict) -> tuple[str | None, str | None]:
    """A row's user and label as far as they are plain values (for its error record)."""
    def plain(name: str) -> str | None:
        value = row.get(name)
        text = plain_value(value) if isinstance(value, str | int | float) else None
        return text[:200] if text else None

    return plain("user"), plain("label")


def check_manifest_file(path: Path) -> None:
    """A manifest must be a regular file: FileNotFoundError when nothing is there, ValueError
    naming what is there otherwise (a folder, a FIFO: never opened, so nothing hangs)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest not found: {path}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ValueError(f"manifest {str(path)[:200]!r} cannot be read: {reason}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO, socket or device"
        raise ValueError(f"manifest {path} is not a regular file ({kind})")
