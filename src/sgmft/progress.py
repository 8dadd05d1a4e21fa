"""Progress bars that suit where the output goes: tqdm's bar on a terminal; elsewhere (a log
file, CI, a pipe) one plain line per tenth of the work instead of a flood of carriage returns."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

from sgmft.words import noun

#: lines a bar writes when its output is not a terminal (one per tenth of the work), besides the last
LINES = 10


def on_terminal() -> bool:
    """Whether stderr (where bars go) is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Lines:
    """tqdm's ``update``/``set_postfix``/``close`` for output that is not a terminal: a line
    ``DESC: 30 % (300/1000 UNIT) POSTFIX`` each time another tenth is done, and at the end."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0):
        self.total, self.desc, self.unit, self.n = max(total, 0), desc, unit, initial
        self.postfix, self.printed = "", initial
        self.shown = initial * LINES // max(self.total, 1)

    def update(self, count: int = 1) -> None:
        self.n += count
        step = min(LINES, self.n * LINES // max(self.total, 1))
        if step > self.shown:
            self.shown = step
            self._line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def _line(self) -> None:
        share = 100 * self.n / max(self.total, 1)
        self.printed = self.n
        print(f"{self.desc}: {share:3.0f} % ({self.n}/{self.total} {noun(self.total, self.unit)}) "
              f"{self.postfix}".rstrip(),
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.n != self.printed:
            self._line()


def progress_bar(total: int, desc: str, unit: str = "it", disable: bool = False, initial: int = 0,
                 leave: bool = True):
    """A bar over ``total`` units of work (update it with ``update(n)``, end it with ``close()``)."""
    if disable or not on_terminal():
        return _Silent() if disable else _Lines(total, desc, unit, initial)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave)


class _Silent:
    def update(self, count: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass
