"""Weibo text cleaning, one small function per step of paper section 3.1.

`clean_text` runs the noise-removal steps in order; `preprocess_text` adds segmentation and
stop-word filtering and returns the token list the encoders see (joined by spaces).

Posts mix languages: jieba segments only the runs of CJK characters; every other run is split
at whitespace, so Latin words stay whole, accents included ("tempête", "café").
"""

from __future__ import annotations

import itertools
import os
import re
import unicodedata
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass

from sgmft.text.stopwords import is_stopword

# A URL is made of RFC 3986 characters only (no backslash, no CJK, no quotes) and does not end
# on sentence punctuation: "(see http://x.cn/a)." keeps its ")." and "http://t.co/a\\nNext" ends
# before the backslash.
_URL_CHAR = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]"
_URL = re.compile(rf"(?:https?://|ftp://|www\.){_URL_CHAR}*[A-Za-z0-9\-_~/#=%&+]|\bt\.cn/[A-Za-z0-9]+",
                  re.I)
# Literal escape sequences left in scraped text ("line one\\nline two").
_ESCAPES = re.compile(r"\\[nrt]")
# A forward marker: "//@name:" (ASCII or full-width colon; normalised before this runs).
_FORWARD_MARKER = re.compile(r"//\s*@[^\s:：/]{1,30}\s*[:：]")
# A mention: "@" (not inside an e-mail address) and a run of nickname characters (Weibo allows
# CJK, letters, digits, "_" and "-"), optionally after "回复" and before a colon.
_MENTION = re.compile(r"(?:回复)?(?<![A-Za-z0-9.])@([\w\-·]+)(\s*[:：])?")
#: Weibo's longest nickname: 30 characters, a CJK character counting as two.
NICKNAME_WEIGHT = 30
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]+")
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


def replace_escapes(text: str) -> str:
    """Turn literal ``\\n``, ``\\r``, ``\\t`` (backslash and letter, left by scrapers) into spaces."""
    return _ESCAPES.sub(" ", text)


def remove_urls(text: str) -> str:
    """Drop http(s)/ftp/www links and Weibo short links (t.cn/...)."""
    return _URL.sub(" ", text)


def remove_forward_chains(text: str, keep_forwarded: bool = True) -> str:
    """Drop ``//@user:`` forward markers; with ``keep_forwarded=False`` drop the whole chain."""
    if keep_forwarded:
        return _FORWARD_MARKER.sub(" ", text)
    match = _FORWARD_MARKER.search(text)
    return text if match is None else text[: match.start()]


def _is_cjk(ch: str) -> bool:
    return bool(_CJK.fullmatch(ch))


def nickname_length(run: str, delimited: bool) -> int:
    """How many characters of ``run`` (nickname characters after an "@") are the nickname.

    Weibo ends a nickname at whitespace, punctuation or a colon, and allows 30 characters
    (a CJK character counting as two). A run cut off by a colon or whitespace is all name
    (``delimited``); one glued to the following words ("@张三今天在公司加班") cannot be told
    apart by characters alone, so there a name ends where its script changes from Latin to CJK
    ("@Lily_2019好久不见"), or after its first jieba word when it starts in CJK.
    """
    weight, end = 0, 0
    for ch in run:
        weight += 2 if _is_cjk(ch) else 1
        if weight > NICKNAME_WEIGHT:
            break
        end += 1
    cjk = _CJK.search(run[:end])
    if delimited or cjk is None:
        return end
    if cjk.start() > 0:
        return cjk.start()
    return len(_jieba().lcut(run[:end])[0])


def remove_mentions(text: str) -> str:
    """Drop ``@user`` mentions (and ``回复@user:`` reply prefixes), keeping the words a glued
    mention would otherwise swallow (see `nickname_length`)."""

    def replace(match: re.Match) -> str:
        run, colon = match.group(1), match.group(2)
        after = text[match.end(1):match.end(1) + 1]
        delimited = bool(colon) or after.isspace()
        keep = run[nickname_length(run, delimited):]
        return f" {keep} " if keep else " "

    return _MENTION.sub(replace, text)


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
    text = replace_escapes(text)
    text = remove_urls(text)
    text = remove_forward_chains(text, config.keep_forwarded)
    text = remove_mentions(text)
    text = strip_topics(text, config.keep_topic_words)
    text = remove_emoticons(text)
    text = remove_punctuation(text)
    return normalize_whitespace(text)


def _jieba():
    """jieba, imported on first use with its start-up chatter (four DEBUG lines) silenced."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def segment(text: str) -> list[str]:
    """Words of a cleaned text: jieba (precise mode) on each run of CJK characters, whitespace
    splitting everywhere else, so that Latin words stay whole."""
    tokens: list[str] = []
    position = 0
    for match in _CJK.finditer(text):
        tokens += text[position:match.start()].split()
        tokens += [tok for tok in _jieba().lcut(match.group()) if tok.strip()]
        position = match.end()
    return tokens + text[position:].split()


def filter_stopwords(tokens: list[str]) -> list[str]:
    """Drop Chinese and English stop words (English compared lower-cased)."""
    return [tok for tok in tokens if not is_stopword(tok)]


def preprocess_text(text: str, config: TextConfig | None = None) -> list[str]:
    """Clean, segment and filter a post's text: the token list T_user of section 3.1."""
    config = config or TextConfig()
    cleaned = clean_text(text, config)
    tokens = segment(cleaned) if config.segment else cleaned.split()
    return filter_stopwords(tokens) if config.remove_stopwords else tokens


def _clean(texts: list[str], config: TextConfig | None) -> list[list[str]]:
    """`preprocess_text` of each text: a worker process's piece of `preprocess_texts`."""
    return [preprocess_text(text, config) for text in texts]


def preprocess_texts(texts: list[str], config: TextConfig | None = None,
                     pool: Executor | None = None) -> Iterator[list[str]]:
    """`preprocess_text` of each text, in order; in ``pool``'s worker processes when given (a
    large block of a manifest: segmentation is the slowest step of reading one), in pieces."""
    size = max(1, -(-len(texts) // (4 * (os.cpu_count() or 1))))
    pieces = [texts[i:i + size] for i in range(0, len(texts), size)]
    done = pool.map(_clean, pieces, itertools.repeat(config)) if pool is not None and len(pieces) > 1 \
        else (_clean(piece, config) for piece in pieces)
    for piece in done:
        yield from piece
