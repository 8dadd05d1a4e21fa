"""A record of image files already checked, so that a second command does not decode them again.

Validating a manifest decodes every image once (to catch truncated files, bombs and non-images,
and to take its hashes). The outcome is kept per file, keyed by its resolved path, with its
size, inode and modification and change times: a file that changed in any way is checked
again. The record is a SQLite table in the manifest folder's work area
(``.sgmft/image-checks.sqlite``, or the user cache when that folder is read-only), shared by
every manifest there: looked up and written in batches, never rewritten whole, safe for several
processes at once. Each distinct file is checked once per call.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from sgmft.data.images import (
    ImageError,
    colour_layout,
    decode_image,
    image_stat,
    perceptual_hash,
    read_image_bytes,
)
from sgmft.data.workdir import work_dir

RECORD = "image-checks.sqlite"
#: keys looked up or written per statement
BATCH = 500
SCHEMA = ("CREATE TABLE IF NOT EXISTS checks (key TEXT PRIMARY KEY, signature TEXT NOT NULL, "
          "sha256 TEXT, phash TEXT, layout TEXT, problem TEXT)")


class Outcome(NamedTuple):
    """An image file's check: its hashes when usable, else the problem in words."""

    sha256: str | None
    phash: str | None
    layout: str | None
    problem: str | None

    @classmethod
    def failed(cls, problem: str) -> Outcome:
        return cls(None, None, None, problem)


def _signature(path: Path) -> str | None:
    """What identifies a file's version: size, inode, mtime and ctime (ns); None if unusable."""
    try:
        info = image_stat(path)
    except ImageError:
        return None
    return f"{info.st_size}:{info.st_ino}:{info.st_mtime_ns}:{info.st_ctime_ns}"


def _key(path: Path) -> str:
    """A path's record key: resolved when it can be (a path too long or too odd to resolve is
    kept as given; its check then says what is wrong with it)."""
    try:
        return str(path.resolve()) if path.exists() else str(path)
    except (OSError, ValueError):
        return str(path)


def _pieces(items: list, size: int = BATCH) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class ImageChecks:
    """Outcomes of image checks, persisted in the SQLite file ``file``. A record that cannot be
    opened, read or written (a read-only or full disk, a damaged file) costs a second check,
    no more: damaged files are replaced."""

    def __init__(self, file: Path):
        self.file = file

    @classmethod
    def for_manifest(cls, manifest: Path) -> ImageChecks:
        return cls(work_dir(manifest) / RECORD)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection | None]:
        connection = None
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.file, timeout=60)
            connection.execute(SCHEMA)
        except sqlite3.DatabaseError:
            if connection is not None:
                connection.close()
            connection = self._replace_damaged()
        except OSError:
            connection = None
        try:
            yield connection
        finally:
            if connection is not None:
                connection.close()

    def _replace_damaged(self) -> sqlite3.Connection | None:
        with contextlib.suppress(OSError, sqlite3.Error):
            self.file.unlink(missing_ok=True)
            connection = sqlite3.connect(self.file, timeout=60)
            connection.execute(SCHEMA)
            return connection
        return None

    def _known(self, connection: sqlite3.Connection | None, keys: list[str]) -> dict[str, tuple]:
        """key -> (signature, *outcome) of the recorded keys among ``keys``."""
        known: dict[str, tuple] = {}
        if connection is None:
            return known
        with contextlib.suppress(sqlite3.Error):
            for piece in _pieces(keys):
                marks = ",".join("?" * len(piece))
                query = ("SELECT key, signature, sha256, phash, layout, problem FROM checks "
                         f"WHERE key IN ({marks})")
                for key, *rest in connection.execute(query, piece):
                    known[key] = tuple(rest)
        return known

    @staticmethod
    def _save(connection: sqlite3.Connection | None, rows: list[tuple]) -> None:
        if connection is None or not rows:
            return
        with contextlib.suppress(sqlite3.Error), connection:
            connection.executemany("INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?, ?)", rows)

    def check(self, paths: list[Path], check: Callable[[Path], Outcome], workers: int = 4,
              pool: Callable[[int], Executor | None] | None = None) -> list[Outcome]:
        """``check(path)`` for each path, reusing the recorded outcome of an unchanged file;
        one outcome per path, in order. ``pool(n)`` gives what runs ``n`` checks (a process pool
        for many, which needs a picklable ``check``; None: ``workers`` threads)."""
        keys = [_key(p) for p in paths]
        distinct = list(dict.fromkeys(keys))
        outcomes: dict[str, Outcome] = {}
        with self._connect() as connection:
            known = self._known(connection, distinct)
            signatures = {key: _signature(Path(key)) for key in distinct}
            todo = []
            for key in distinct:
                saved = known.get(key)
                if signatures[key] is not None and saved is not None and saved[0] == signatures[key]:
                    outcomes[key] = Outcome(*saved[1:])
                else:
                    todo.append(key)
            given = pool(len(todo)) if pool is not None and todo else None
            owned = given is None and len(todo) > 1
            runner = ThreadPoolExecutor(max_workers=workers) if owned else given
            try:
                for piece in _pieces(todo, BATCH * 4):
                    found = list(runner.map(check, [Path(k) for k in piece])) if runner is not None \
                        else [check(Path(k)) for k in piece]
                    outcomes.update(zip(piece, found, strict=True))
                    self._save(connection, [(key, signatures[key], *outcome)
                                            for key, outcome in zip(piece, found, strict=True)
                                            if signatures[key] is not None])
            finally:
                if owned:
                    runner.shutdown()
        return [outcomes[key] for key in keys]


#: the image checks' outcome for a post without an image
TEXT_ONLY = Outcome("", None, None, None)


def check_image(path: Path) -> Outcome:
    """The hashes of a usable image (sha256, perceptual hash, colour layout), or its problem."""
    try:
        data = read_image_bytes(path)
    except ImageError as exc:
        return Outcome.failed(str(exc))
    try:
        image = decode_image(data)
    except ImageError as exc:
        return Outcome.failed(f"bad image {path}: {exc}")
    return Outcome(hashlib.sha256(data).hexdigest(), perceptual_hash(image), colour_layout(image), None)
