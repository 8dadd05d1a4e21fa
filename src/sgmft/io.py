"""Files written safely: atomic writes (temp file in the same folder, fsync, rename) with the
permissions the umask gives, clear errors for full or read-only disks, stale temp files from
killed writers cleaned up, and a lock that keeps two processes out of one folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
TEMP_SUFFIX = ".tmp"


class StorageError(OSError):
    """A write that failed for a reason the user can fix: a full disk, a read-only folder."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def free_bytes(folder: Path) -> int:
    """Free space where ``folder`` (or its nearest existing parent) lives."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def file_size_limit() -> int | None:
    """The largest file this process may write (``ulimit -f``), in bytes; None without a limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def storage_error(path: Path, exc: BaseException, needed: int | None = None) -> StorageError | None:
    """A `StorageError` in words for a full disk or a read-only place, else None. Libraries
    report a full disk in their own ways (``basic_ios::clear: iostream error`` from torch), so
    the free space is looked at too."""
    folder = Path(path).parent
    code = getattr(exc, "errno", None)
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StorageError(code, f"cannot write in {folder}: it is read-only or not yours; choose "
                                  "another output folder")
    free = free_bytes(folder)
    if code == errno.ENOSPC or (needed is not None and free < needed) or free < 1024 * 1024:
        want = f"; about {needed / 1e6:.1f} MB are needed" if needed else ""
        return StorageError(errno.ENOSPC, f"no space left on the device holding {folder} "
                                          f"({free / 1e6:.1f} MB free{want}): free some space or "
                                          "write elsewhere")
    limit = file_size_limit()
    too_large = "File too large" in str(exc) or "os error 27" in str(exc)
    if code == errno.EFBIG or too_large or (limit is not None and code is None):
        bound = f" of {limit:,} bytes" if limit is not None else ""
        return StorageError(errno.EFBIG, f"cannot write {Path(path).name} in {folder}: a file-size limit"
                                         f"{bound} is in force (ulimit -f) and the file would pass it; raise "
                                         "the limit or write less")
    return None


def check_writable(folder: Path) -> None:
    """Fail early (before a long job) when ``folder`` cannot be created or written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check.", suffix=TEMP_SUFFIX):
            pass
    except OSError as exc:
        raise storage_error(folder / "x", exc) or exc from None


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path``.

    A reader sees the old file or the new one, never half of one; a killed writer leaves
    only a stray ``.NAME.*.tmp`` file (see `remove_stale_temp_files`). The file gets the
    permissions of the umask, as ``open`` would give it. A full disk or read-only folder
    raises a `StorageError` that says so.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise storage_error(path, exc) or exc from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception):   # torch and safetensors report a full disk their own ways
            problem = storage_error(path, exc)
            if problem is not None:
                raise problem from exc
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temp_files(folder: Path) -> int:
    """Remove the temp files that killed writers left in ``folder``; call it while holding the
    folder's lock, so that no live writer's file is taken. Returns how many went."""
    removed = 0
    for stray in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            stray.unlink()
            removed += 1
    if removed:
        log.info("removed %d stale temp file(s) left in %s by a killed run", removed, folder)
    return removed


@contextlib.contextmanager
def folder_lock(folder: Path, what: str, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (a ``.lock`` file with the holder's pid): a second
    process waits, after saying who holds it, or with ``wait=False`` fails with that news. The
    lock goes with the process, however it ends."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "a+")   # noqa: SIM115 (held for the whole block)
    except OSError as exc:
        raise storage_error(folder / ".lock", exc) or StorageError(
            exc.errno, f"cannot lock {folder}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            if not wait:
                raise BlockingIOError(errno.EWOULDBLOCK, f"{folder} is in use by {holder}") from None
            log.warning("%s is in use by %s; waiting for it to finish", folder, holder)
            started = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            log.info("got %s after %.0f s", folder, time.monotonic() - started)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} ({what})\n")
            handle.flush()
        except OSError as exc:
            raise storage_error(folder / ".lock", exc) or StorageError(
                exc.errno, f"cannot write the lock file in {folder}: {exc.strerror or exc}") from None
        yield
    finally:
        with contextlib.suppress(OSError):   # a full disk fails the close's flush too: the error
            handle.close()                   # that said so (above) is the one to see


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
