"""Reading manifest files row by row, bounded (`sgmft.limits`): JSONL records and CSV rows.

Each reader yields ``(row number, fields or None, problem or None)``; rows are numbered as a
person counts lines (a CSV header is row 1). Nothing here checks what the fields mean: that is
`sgmft.data.manifest`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

from sgmft.data.fields import canonical_names
from sgmft.limits import LIMITS


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


def read_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield ``(row number, fields or None, problem or None)`` for every row of the file."""
    if path.suffix.lower() == ".csv":   # read as it goes: a BOM dropped, bad bytes kept to be named
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            yield from _read_csv(handle)
    else:
        with open(path, "rb") as handle:
            yield from _read_jsonl(handle)


def columns_seen(path: Path, rows: int = 1000) -> tuple[set[str], int]:
    """The column names (stripped; known ones lower-cased) that hold a value in the first
    ``rows`` rows of a manifest, and how many rows were read."""
    seen: set[str] = set()
    read = 0
    for _, row, _ in read_rows(path):
        read += 1
        if row is not None:
            seen |= {str(k) for k, v in canonical_names(row).items() if v not in (None, "")}
        if read >= rows:
            break
    return seen, read


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
            reason = exc.msg.removesuffix(" at")   # "Unterminated string starting at" + " at column"
            yield number, None, f"malformed row: invalid JSON ({reason} at column {exc.colno})"
            continue
        except RecursionError:
            row = None
        except ValueError as exc:   # e.g. an integer of more digits than Python converts
            digits = re.search(r"value has (\d+) digits", str(exc))
            reason = f"a number of {digits.group(1)} digits (at most 4,300 are read; quote an id as a " \
                     "string)" if digits else str(exc)
            yield number, None, f"malformed row: {reason}"
            continue
        if row is None or _depth(row) > LIMITS.json_depth:
            yield number, None, f"malformed row: JSON nested deeper than {LIMITS.json_depth} levels"
            continue
        if not isinstance(row, dict):
            yield number, None, "malformed row: a JSON object is expected"
            continue
        yield number, row, None


def _read_csv(handle: io.TextIOBase) -> Iterator[tuple[int, dict | None, str | None]]:
    csv.field_size_limit(LIMITS.field_bytes)
    reader = csv.reader(handle)
    try:
        header = [name.strip() for name in next(reader)]
    except (StopIteration, csv.Error):
        return
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        yield 1, None, f"malformed header: column(s) {', '.join(map(repr, repeated))} appear more than once"
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


