"""Progress on a terminal: one line on stderr, redrawn in place, with
what is done out of the total, the rate and the time left::

    scan: 45,000/200,106 inodes 22% 13,210/s ETA 0:12

Quiet (draws nothing, costs nothing) when the stream is not a terminal or
when asked (``--quiet``).  Used by ``crashext scan`` and ``crashext
triage``; standard library only (time, sys).

>>> with Progress("triage", total=len(dumps), unit="dumps",
...               quiet=quiet) as p:                     # doctest: +SKIP
...     for d in dumps:
...         work(d); p.advance()

Another writer on the same terminal calls :meth:`clear` before it
writes; the line comes back at the next update.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, Optional, TextIO

#: Seconds between two redraws at most.
INTERVAL = 0.2
#: Widest line drawn (an 80-column terminal never wraps it).
WIDTH = 79


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def clock_text(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``."""
    s = int(seconds + 0.5)
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return "%d:%02d:%02d" % (h, m, s) if h else "%d:%02d" % (m, s)


def rate_text(per_second: float, unit: str) -> str:
    """``13,210/s``, or per minute below one a second (``4.5/min``)."""
    if per_second >= 10:
        return "{:,.0f}/s".format(per_second)
    if per_second >= 1:
        return "%.1f/s" % per_second
    return "%.1f/min" % (per_second * 60)


class Progress:
    """``label: done/total unit pct rate ETA`` on ``stream`` (default
    stderr), redrawn at most every ``interval`` seconds.  ``total`` may
    come later (:meth:`set_total`); without it the line shows the count
    and the rate.  ``active`` is False when ``quiet`` or ``stream`` is
    not a terminal: then every method returns at once."""

    def __init__(self, label: str, total: Optional[int] = None,
                 unit: str = "", stream: Optional[TextIO] = None,
                 quiet: bool = False, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.unit, self.total = label, unit, total
        self.stream = stream if stream is not None else sys.stderr
        self.active = not quiet and _isatty(self.stream)
        self.interval = interval
        self.clock = clock
        self.done = 0
        self.t0 = clock()
        self._drawn_at: Optional[float] = None
        self._shown = 0                 # width of the line on screen

    # -- counting ------------------------------------------------------

    def set_total(self, total: Optional[int]) -> None:
        self.total = total

    def update(self, done: int, total: Optional[int] = None) -> None:
        """``done`` so far (absolute)."""
        if total is not None:
            self.total = total
        self.done = done
        if not self.active:
            return
        now = self.clock()
        if self._drawn_at is None or now - self._drawn_at >= self.interval:
            self._draw(now)

    def advance(self, n: int = 1) -> None:
        """``n`` more done."""
        self.update(self.done + n)

    # -- the line ------------------------------------------------------

    def line(self, now: Optional[float] = None) -> str:
        """The text of the line (no ``\\r``)."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.t0, 1e-9)
        rate = self.done / elapsed
        parts = ["%s:" % self.label]
        unit = (" " + self.unit) if self.unit else ""
        if self.total:
            parts.append("{:,}/{:,}{}".format(self.done, self.total, unit))
            parts.append("%d%%" % (100 * self.done // self.total))
        else:
            parts.append("{:,}{}".format(self.done, unit))
        if self.done and elapsed >= 0.5:
            parts.append(rate_text(rate, self.unit))
            if self.total and self.total > self.done:
                parts.append("ETA " + clock_text((self.total - self.done)
                                                 / rate))
        return " ".join(parts)[:WIDTH]

    def _draw(self, now: float) -> None:
        text = self.line(now)
        pad = max(0, self._shown - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._shown = len(text)
        self._drawn_at = now

    def clear(self) -> None:
        """Erase the line (before other output on the same terminal); the
        next :meth:`update` draws it again."""
        if self.active and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0
            self._drawn_at = None

    def close(self) -> None:
        """Erase the line for good."""
        self.clear()
        self.active = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- adapters ------------------------------------------------------

    def scan_callback(self) -> Optional[Callable[[Dict[str, Any]], None]]:
        """A ``progress`` callback for crashext.triage.scan (dicts with
        ``inodes``, ``total``, ``done``), or None when quiet."""
        if not self.active:
            return None

        def feed(d: Dict[str, Any]) -> None:
            if d.get("done"):
                self.close()
            else:
                self.update(d.get("inodes", 0), d.get("total"))
        return feed
