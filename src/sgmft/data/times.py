"""A post's time: ISO 8601 (``2026-03-02T07:15:00+08:00``, ``2026-03-02 07:15``, a date) or
epoch seconds (``1772406900``). Profiles bucket posts by the hour, weekday or month on the clock
the value states: a post written at 07:15 local time (+08:00) counts at 7, whatever the zone;
epoch seconds have no zone and count in UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_EPOCH = re.compile(r"[+-]?\d{1,15}(\.\d+)?")
#: epoch seconds outside 1970-01-01 .. 2100-01-01 are taken for a mistake (milliseconds, say)
_LOWEST, _HIGHEST = 0, 4102444800


def parse_time(value: object) -> datetime:
    """The wall-clock time (naive) a value states; ValueError in words when it is not a time."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(
            f"bad time {value!r}: expected ISO 8601 (2026-03-02T07:15:00+08:00) or epoch seconds"
        )
    text = str(value).strip()
    if _EPOCH.fullmatch(text):
        seconds = float(text)
        if not _LOWEST <= seconds < _HIGHEST:
            raise ValueError(
                f"bad time {text!r}: epoch seconds must fall between 1970 and 2100 "
                "(milliseconds? divide by 1000)"
            )
        return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
    try:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        raise ValueError(
            f"bad time {text[:60]!r}: expected ISO 8601 (2026-03-02T07:15:00+08:00) or epoch seconds"
        ) from None


def wall_clock(value: object) -> str:
    """`parse_time` as an ISO 8601 string without zone, to the second (what records carry)."""
    return parse_time(value).isoformat(timespec="seconds")
