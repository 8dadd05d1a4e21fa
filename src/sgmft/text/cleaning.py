"""Weibo text cleaning, one small function per step of paper section 3.1.

`clean_text` runs the noise-removal steps in order; `preprocess_text` adds jieba segmentation
and stop-word filtering and returns the token list the encoders see (joined by spaces).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from sgmft.text.stopwords import is_stopword

_URL = re.compile(r"(?:https?://|ftp://|www\.)[^\s\u4e00-\u9fff]+|\bt\.cn/[A-Za-z0-9]+", re.I)
# A forward marker: "//@name:" (ASCII or full-width colon; normalised before this runs).
_FORWARD_MARKER = re.compile(r"//\s*@[^\s:：/]{1,30}\s*[:：]")
_MENTION = re.compile(r"(?:回复)?@[\w\-·]{1,30}[:：]?")
_TOPIC = re.compile(r"#([^#\n]{1,64})#")
_EMOTICON = re.compile(r"\[[^\[\]\s]{1,10}\]")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TextConfig:
    """Switches of the cleaning pipeline; the defaults follow the paper.

    keep_forwarded: keep the words of forwarded comments and drop only the ``//@user:`` markers
        (the paper removes the markers; dropping the forwarded text is the alternative).
    keep_topic_words: keep the words inside ``#topic#`` markers (only the ``#`` go).
    segment: run jieba; tokens are joined by single spaces.
    remove_stopwords: drop Chinese and English stop words after segmentation.
    """

    keep_forwarded: bool = True
    keep_topic_words: bool = True
    segment: bool = True
    remove_stopwords: bool = True


def to_halfwidth(text: str) -> str:
    """Map full-width ASCII variants (U+FF01-U+FF5E) and the ideographic space to half-width."""
    out = []
    for ch in text:
        code = ord(ch)
        if code == 0x3000:
            out.append(" ")
        elif 0xFF01 <= code <= 0xFF5E:
            out.append(chr(code - 0xFEE0))
        else:
            out.append(ch)
    return "".join(out)


def remove_urls(text: str) -> str:
    """Drop http(s)/ftp/www links and Weibo short links (t.cn/...)."""
    return _URL.sub(" ", text)


def remove_forward_chains(text: str, keep_forwarded: bool = True) -> str:
    """Drop ``//@user:`` forward markers; with ``keep_forwarded=False`` drop the whole chain."""
    if keep_forwarded:
        return _FORWARD_MARKER.sub(" ", text)
    match = _FORWARD_MARKER.search(text)
    return text if match is None else text[: match.start()]


def remove_mentions(text: str) -> str:
    """Drop ``@user`` mentions (and ``回复@user:`` reply prefixes); a name ends at space or punctuation."""
    return _MENTION.sub(" ", text)


def strip_topics(text: str, keep_words: bool = True) -> str:
    """Turn ``#topic#`` into ``topic`` (or drop it with ``keep_words=False``)."""
    return _TOPIC.sub((lambda m: f" {m.group(1)} ") if keep_words else " ", text)


def remove_emoticons(text: str) -> str:
    """Drop Weibo emoticon codes such as ``[哈哈]`` or ``[doge]``."""
    return _EMOTICON.sub(" ", text)


def remove_punctuation(text: str) -> str:
    """Replace every punctuation or symbol character (Unicode P* and S*, emoji included) by a space."""
    return "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace (and control characters) to one space and strip the ends."""
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return _WHITESPACE.sub(" ", text).strip()


def clean_text(text: str, config: TextConfig | None = None) -> str:
    """All noise-removal steps of section 3.1, in order, without segmentation."""
    config = config or TextConfig()
    text = to_halfwidth(text)
    text = remove_urls(text)
    text = remove_forward_chains(text, config.keep_forwarded)
    text = remove_mentions(text)
    text = strip_topics(text, config.keep_topic_words)
    text = remove_emoticons(text)
    text = remove_punctuation(text)
    return normalize_whitespace(text)


def segment(text: str) -> list[str]:
    """jieba segmentation (precise mode), whitespace tokens dropped."""
    import jieba

    return [tok for tok in jieba.lcut(text) if tok.strip()]


def filter_stopwords(tokens: list[str]) -> list[str]:
    """Drop Chinese and English stop words (English compared lower-cased)."""
    return [tok for tok in tokens if not is_stopword(tok)]


def preprocess_text(text: str, config: TextConfig | None = None) -> list[str]:
    """Clean, segment and filter a post's text: the token list T_user of section 3.1."""
    config = config or TextConfig()
    cleaned = clean_text(text, config)
    tokens = segment(cleaned) if config.segment else cleaned.split()
    return filter_stopwords(tokens) if config.remove_stopwords else tokens
