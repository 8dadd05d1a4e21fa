"""Post times: ISO 8601 on its own clock, epoch seconds in UTC, and bad values in words."""

import pytest

from sgmft.data.times import parse_time, wall_clock


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-02T07:15:00+08:00", "2026-03-02T07:15:00"),
        ("2026-03-02T07:15:00Z", "2026-03-02T07:15:00"),
        ("2026-03-02 21:05", "2026-03-02T21:05:00"),
        ("2026-03-02", "2026-03-02T00:00:00"),
        (1772406900, "2026-03-01T23:15:00"),
        ("1772406900.7", "2026-03-01T23:15:00"),
    ],
)
def test_times_on_the_clock_they_state(value, expected):
    assert wall_clock(value) == expected


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("yesterday", "expected ISO 8601"),
        ("2026-13-02", "expected ISO 8601"),
        (1772406900000, "milliseconds"),
        (True, "expected ISO 8601"),
        (["2026"], "expected ISO 8601"),
    ],
)
def test_bad_times_say_why(value, words):
    with pytest.raises(ValueError, match=words):
        parse_time(value)
