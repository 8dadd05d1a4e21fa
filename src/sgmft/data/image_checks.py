"""A record of image files already checked, so that a second command does not decode them again.

Validating a manifest decodes every image once (to catch truncated files, bombs and non-images).
The outcome is kept per file, keyed by its resolved path and its size, inode and modification
and change times: a file that changed in any way is checked again. The record lives in the
manifest folder's work area (``.sgmft/image-checks.json``, or the user cache when that folder is
read-only) and is shared by every manifest there. Each distinct file is checked once per call.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sgmft.data.images import ImageError, image_stat
from sgmft.data.workdir import work_dir
from sgmft.io import atomic_write_json

Outcome = tuple[str | None, str | None, str | None]   # (sha256, phash, None) or (None, None, problem)
RECORD = "image-checks.json"
FORMAT = 2


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


class ImageChecks:
    """Outcomes of image checks, persisted in ``file``."""

    def __init__(self, file: Path):
        self.file = file
        try:
            saved = json.loads(file.read_text(encoding="utf-8"))
            self.known = saved["checks"] if saved.get("format") == FORMAT else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.known = {}

    @classmethod
    def for_manifest(cls, manifest: Path) -> ImageChecks:
        return cls(work_dir(manifest) / RECORD)

    def check(self, paths: list[Path], check: Callable[[Path], Outcome], workers: int = 4) -> list[Outcome]:
        """``check(path)`` for each path, reusing the recorded outcome of an unchanged file;
        one outcome per path, in order."""
        keys = [_key(p) for p in paths]
        distinct = dict.fromkeys(keys)
        signatures = {key: _signature(Path(key)) for key in distinct}
        todo = [key for key in distinct
                if signatures[key] is None or self.known.get(key, [None])[0] != signatures[key]]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            fresh = dict(zip(todo, pool.map(check, [Path(k) for k in todo]), strict=True))
        for key, outcome in fresh.items():
            if signatures[key] is not None:
                self.known[key] = [signatures[key], *outcome]
        if fresh:
            self._save()
        outcomes = {key: fresh.get(key) or tuple(self.known[key][1:]) for key in distinct}
        return [outcomes[key] for key in keys]   # type: ignore[misc]

    def _save(self) -> None:
        with contextlib.suppress(OSError):   # an unwritten record costs a second check, no more
            atomic_write_json(self.file, {"format": FORMAT, "checks": self.known})
