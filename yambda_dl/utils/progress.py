"""Progress lines for long steps (download, synth, conversion, split), and their one-line summaries.

Writes to stderr at most once every `interval` seconds, so it costs nothing on hot loops and keeps logs short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts work done out of an optional total and prints `desc: done/total unit (rate/s)` now and then."""

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "rows",
        enabled: bool = True,
        interval: float = 2.0,
        stream: TextIO | None = None,
    ):
        self.desc, self.total, self.unit, self.enabled, self.interval = desc, total, unit, enabled, interval
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self._last_print = self.start

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and now - self._last_print >= self.interval:
            self._last_print = now
            of = f"/{self.total:,}" if self.total else ""
            rate = self.done / max(now - self.start, 1e-9)
            print(f"{self.desc}: {self.done:,}{of} {self.unit} ({rate:,.0f}/s)", file=self.stream, flush=True)

    def summary(self, message: str) -> str:
        """Print and return the step's closing line: what was done, in how long."""
        line = f"{self.desc}: {message} in {self.elapsed:.1f} s"
        if self.enabled:
            print(line, file=self.stream, flush=True)
        return line
