"""Safe writes: atomic, umask-following, clear errors on full or read-only disks, stale temp
files, and the folder lock."""

import errno
import logging
import os
import threading
import time

import pytest
import torch

from sgmft import io


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = io.atomic_write_bytes(tmp_path / "a.bin", b"x")
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert io.atomic_write_bytes(tmp_path / "b.bin", b"x").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_a_full_disk_is_named_with_the_space_needed(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "free_bytes", lambda folder: 100_000)

    def write(tmp):
        raise RuntimeError("basic_ios::clear: iostream error")   # what torch.save says

    with pytest.raises(io.StorageError, match=r"no space left on the device holding .* \(0.1 MB free"):
        io.atomic_write(tmp_path / "checkpoint.pt", write)
    assert not list(tmp_path.iterdir())           # no temp file left behind
    enospc = OSError(errno.ENOSPC, "No space left on device")
    problem = io.storage_error(tmp_path / "x", enospc, needed=5_000_000)
    assert "about 5.0 MB are needed" in str(problem)


def test_torch_save_on_a_full_device_reads_as_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "free_bytes", lambda folder: 0)
    with pytest.raises(io.StorageError, match="no space left"):
        io.atomic_write(tmp_path / "c.pt", lambda tmp: torch.save({"x": 1}, "/dev/full"))


def test_read_only_folder_fails_early_with_its_name(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):          # root writes anywhere: simulate the refusal
            with pytest.raises(io.StorageError, match="read-only"):
                raise io.storage_error(folder / "x", PermissionError(errno.EACCES, "denied"))
        else:
            with pytest.raises(io.StorageError, match=f"cannot write in {folder}"):
                io.check_writable(folder)
    finally:
        folder.chmod(0o755)


def test_stale_temp_files_are_removed(tmp_path):
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / "keep.txt").write_text("x")
    assert io.remove_stale_temp_files(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_folder_lock_names_its_holder_and_makes_the_second_wait(tmp_path, caplog):
    order = []
    with io.folder_lock(tmp_path, "first job"):
        refused = pytest.raises(BlockingIOError, match=f"in use by pid {os.getpid()} \\(first job\\)")
        with refused, io.folder_lock(tmp_path, "second job", wait=False):
            pass

        def second():
            with io.folder_lock(tmp_path, "second job"):
                order.append("second")

        with caplog.at_level(logging.WARNING):
            thread = threading.Thread(target=second)
            thread.start()
            time.sleep(0.5)
            order.append("first done")
    thread.join(5)
    assert order == ["first done", "second"] and "waiting for it to finish" in caplog.text


def test_a_file_size_limit_is_an_error_in_words_for_every_writer(tmp_path):
    """Under ``ulimit -f`` (64 KiB here) a write past the limit fails in words, whichever library
    writes: plain bytes, safetensors, torch.save; nothing is left half-written."""
    import subprocess
    import sys

    script = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
from pathlib import Path
import torch
from safetensors.torch import save_file
from sgmft.io import StorageError, atomic_write, atomic_write_bytes
folder = Path(sys.argv[1])
writers = {"bytes": lambda: atomic_write_bytes(folder / "a.bin", b"x" * 200_000),
           "safetensors": lambda: atomic_write(folder / "b.safetensors",
                                               lambda tmp: save_file({"w": torch.zeros(50_000)}, str(tmp))),
           "torch": lambda: atomic_write(folder / "c.pt", lambda tmp: torch.save(torch.zeros(50_000), tmp))}
for name, write in writers.items():
    try:
        write()
        print(name, "written")
    except StorageError as exc:
        print(name, "StorageError", exc)
"""
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all("StorageError" in line and "file-size limit of 65,536 bytes" in line
                                   for line in lines), result.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_locking_is_the_clean_error_not_the_close_s(tmp_path, monkeypatch):
    import sgmft.io as io_module
    from sgmft.io import StorageError, folder_lock

    real_open = open

    class FullDisk:
        """A lock file on a disk with 0 bytes free: writes are buffered, flush and close fail."""

        def __init__(self, *args, **kwargs):
            self.file = real_open(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.file, name)

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.file.close()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_module, "open", FullDisk, raising=False)
    with pytest.raises(StorageError, match="no space left"), folder_lock(tmp_path / "run", "test"):
        pass
