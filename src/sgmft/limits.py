"""Every input limit of sgmft, in one place (documented in ``docs/limits.md``).

Each limit can be changed without code through an environment variable named
``SGMFT_LIMIT_<FIELD>`` (``SGMFT_LIMIT_TEXT_CHARS=20000``), read once at import; the server's
per-request limits are also options of ``sgmft serve``. Over a limit, a manifest row gets a
row error, an HTTP request a 413 (or 400), never a traceback and never unbounded memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

ENV_PREFIX = "SGMFT_LIMIT_"


@dataclass(frozen=True)
class Limits:
    #: characters of a post's text (Weibo's long posts hold up to 2,000; tweets 280, or
    #: 25,000 for paid accounts); the encoders then truncate to their own context
    text_chars: int = 25_000
    #: bytes of one image file or upload
    image_bytes: int = 20 * 1024 * 1024
    #: pixels of one image (decompression bombs), read from the header before decoding
    image_pixels: int = 64_000_000
    #: decoded pixels held at once by `sgmft extract` (images are loaded in batches under it)
    batch_pixels: int = 256_000_000
    #: decoded pixels of one HTTP request (all its images together)
    request_pixels: int = 128_000_000
    #: posts in one ``/predict/batch`` request
    batch_rows: int = 64
    #: bytes of one HTTP request body, refused (413) before any of it is stored
    request_bytes: int = 64 * 1024 * 1024
    #: bytes of request bodies the server holds at once, all requests together: past it a request
    #: is answered 503 with Retry-After (one request alone is always taken)
    flight_bytes: int = 128 * 1024 * 1024
    #: seconds the server waits for the next piece of a request body before answering 408
    body_seconds: int = 20
    #: nesting depth of a JSON manifest row
    json_depth: int = 32
    #: bytes of one manifest line (JSONL) or field (CSV)
    field_bytes: int = 1024 * 1024


def _from_environment() -> Limits:
    """The defaults, with any ``SGMFT_LIMIT_*`` variable applied (a bad value is an error)."""
    found = {}
    for field in fields(Limits):
        value = os.environ.get(ENV_PREFIX + field.name.upper())
        if value is None:
            continue
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}{field.name.upper()}={value!r}: expected a whole number") from None
        if number < 1:
            raise ValueError(f"{ENV_PREFIX}{field.name.upper()}={value!r}: expected a positive number")
        found[field.name] = number
    return replace(Limits(), **found)


LIMITS = _from_environment()
