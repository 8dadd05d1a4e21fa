"""The work folder of a manifest: where its splits, feature caches and image checks go.

``$SGMFT_CACHE/<key>`` when that is set, else ``<manifest folder>/.sgmft`` when the folder is
writable, else ``~/.cache/sgmft/<key>`` (``$XDG_CACHE_HOME/sgmft/<key>`` when that is set); <key>
names the folder. Files in it are named by
manifest content, so manifests sharing a folder never collide.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def _writable(folder: Path) -> bool:
    """Writable, and not marked read-only (root may write anywhere, but should not)."""
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def user_cache_dir() -> Path:
    """sgmft's own cache folder: ``$SGMFT_CACHE`` when set, else ``$XDG_CACHE_HOME/sgmft``, else
    ``~/.cache/sgmft``."""
    configured = os.environ.get("SGMFT_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sgmft"


def folder_work_dir(folder: Path) -> Path:
    """Where derived data of the manifests in ``folder`` goes (see the module docstring)."""
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    if os.environ.get("SGMFT_CACHE") or not _writable(folder):
        return user_cache_dir() / key
    return folder / ".sgmft"


def work_dir(manifest_path: Path) -> Path:
    """The work folder of the manifest file at ``manifest_path``."""
    return folder_work_dir(Path(manifest_path).parent)
