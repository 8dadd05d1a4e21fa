"""Writing prediction records as they come: JSONL (a record per line), JSON (one array), CSV
and Parquet (flat columns, one row per record). A writer appends to ``OUT.partial`` (Parquet:
complete part files in ``OUT.partial/``), reports a state after each block (the bytes written,
or the parts) from which a killed run resumes, and puts the finished file in place at the end."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any


def flat_columns(labels: list[str], kept: tuple[str, ...] = ()) -> list[str]:
    """The columns of a CSV or Parquet prediction record (``kept``: ``by``, ``time``, the
    columns a profile reads)."""
    return ["id", "row", "user", "split", "true_label", "label", *(f"p_{label}" for label in labels),
            "text_only", "image_only", "set", "best_guess", "novelty_text", "novelty_image",
            "unlike_training", "error", *kept]


def flat(record: dict[str, Any], labels: list[str], kept: tuple[str, ...] = ()) -> dict[str, Any]:
    """A record as the flat columns of `flat_columns` (absent values None)."""
    probs = record.get("probabilities", {})
    evidence = record.get("evidence", {})
    members = record.get("set")
    return {"id": record["id"], "row": record["row"], "user": record.get("user"),
            "split": record.get("split"), "true_label": record.get("true_label"),
            "label": record.get("label"),
            **{f"p_{label}": probs.get(label) for label in labels},
            "text_only": evidence.get("text_only", {}).get("label"),
            "image_only": evidence.get("image_only", {}).get("label"),
            "set": "|".join(members) if members is not None else None,
            "best_guess": record.get("best_guess"),
            "novelty_text": (record.get("novelty") or {}).get("text"),
            "novelty_image": (record.get("novelty") or {}).get("image"),
            "unlike_training": record.get("unlike_training"), "error": record.get("error"),
            **{name: record.get(name) for name in kept}}


class _TextWriter:
    """JSONL, JSON or CSV appended to ``OUT.partial``; its state is the byte length written."""

    def __init__(self, out: Path, labels: list[str], state: int | None, kept: tuple[str, ...] = ()):
        self.out, self.labels, self.kept = out, labels, kept
        self.partial = out.with_name(out.name + ".partial")
        self.kind = out.suffix.lower()
        fresh = state is None or not self.partial.is_file()
        self.handle = open(self.partial, "wb" if fresh else "r+b")   # noqa: SIM115 (closed in finish)
        if fresh:
            self.handle.write(self._head())
        else:
            self.handle.truncate(state)
            self.handle.seek(state)
        self.count = 0 if fresh else None   # JSON: whether a record came before (commas)

    def _head(self) -> bytes:
        if self.kind == ".csv":
            buffer = io.StringIO()
            csv.writer(buffer).writerow([*flat_columns(self.labels, self.kept), "warnings"])
            return buffer.getvalue().encode()
        return b"[\n" if self.kind == ".json" else b""

    def write(self, records: list[dict[str, Any]]) -> None:
        if self.kind == ".csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            for r in records:   # warnings joined by " | ", as Parquet's list column holds them
                writer.writerow(["" if v is None else v for v in flat(r, self.labels, self.kept).values()]
                                + [" | ".join(r.get("warnings") or [])])
            data = buffer.getvalue().encode()
        elif self.kind == ".json":
            first = self.handle.tell() <= 2
            data = b"".join((b"" if first and i == 0 else b",\n") + json.dumps(r, ensure_ascii=False).encode()
                            for i, r in enumerate(records))
        else:
            data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
        self.handle.write(data)

    def checkpoint(self) -> int:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        return self.handle.tell()

    def finish(self) -> None:
        if self.kind == ".json":
            self.handle.write(b"\n]\n")
        self.checkpoint()
        self.handle.close()
        os.replace(self.partial, self.out)


class _ParquetWriter:
    """Parquet: each block a complete part file in ``OUT.partial/``; at the end the parts are
    copied, row group by row group, into ``OUT``. Its state is the number of parts."""

    def __init__(self, out: Path, labels: list[str], state: int | None, kept: tuple[str, ...] = ()):
        import pyarrow as pa

        self.out, self.labels, self.kept, self.parts = out, labels, kept, out.with_name(out.name + ".partial")
        strings = ("id", "user", "split", "true_label", "label", "text_only", "image_only", "set",
                   "best_guess", "error", "by", "time")
        self.schema = pa.schema([(name, pa.string() if name in strings else pa.int64() if name == "row"
                                  else pa.bool_() if name == "unlike_training" else pa.float64())
                                 for name in flat_columns(labels, kept)]
                                + [("warnings", pa.list_(pa.string()))])
        if state is None:
            shutil.rmtree(self.parts, ignore_errors=True)
        self.parts.mkdir(parents=True, exist_ok=True)
        self.count = state or 0
        for extra in sorted(self.parts.glob("part-*.parquet"))[self.count:]:
            extra.unlink()

    def write(self, records: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not records:
            return
        rows = [flat(r, self.labels, self.kept) | {"warnings": r.get("warnings")} for r in records]
        table = pa.Table.from_pylist(rows, schema=self.schema)
        target = self.parts / f"part-{self.count:06d}.parquet"
        temp = target.with_suffix(".tmp")
        pq.write_table(table, temp)
        os.replace(temp, target)
        self.count += 1

    def checkpoint(self) -> int:
        return self.count

    def finish(self) -> None:
        import pyarrow.parquet as pq

        temp = self.out.with_name(f".{self.out.name}.tmp")
        with pq.ParquetWriter(temp, self.schema) as writer:
            for part in sorted(self.parts.glob("part-*.parquet")):
                writer.write_table(pq.read_table(part, schema=self.schema))
        os.replace(temp, self.out)
        shutil.rmtree(self.parts)


def open_writer(out: Path, labels: list[str], state: int | None, kept: tuple[str, ...] = ()):
    return _ParquetWriter(out, labels, state, kept) if out.suffix.lower() == ".parquet" else \
        _TextWriter(out, labels, state, kept)
