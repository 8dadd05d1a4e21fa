"""Chinese and English stop words shipped with the package.

The lists in ``stopwords/zh.txt`` and ``stopwords/en.txt`` are the ``zh`` and ``en`` lists of
stopwords-iso (https://github.com/stopwords-iso/stopwords-iso, MIT licence), taken from the
`stopwordsiso` 0.7.1 package by ``scripts/update_stopwords.py``.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def load_stopwords(lang: str) -> frozenset[str]:
    """The stop-word set for ``lang`` ("zh" or "en"); lines starting with '#' are comments."""
    text = files("sgmft.text").joinpath("stopwords", f"{lang}.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def is_stopword(token: str) -> bool:
    """True when ``token`` is a Chinese stop word or (case-insensitively) an English one."""
    return token in load_stopwords("zh") or token.lower() in load_stopwords("en")
