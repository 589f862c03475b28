"""Progress for long steps (download, synth, conversion, split), and their one-line summaries, through logging.

One global switch, `set_enabled(False)`, silences every progress bar and progress line (the app's `progress:` config
key calls it); summaries are still logged, since they are results, not progress. On a terminal, with tqdm installed
(it comes with lightning), a step shows a tqdm bar on stderr; elsewhere (a log file, Hydra's job log, a pipe) it logs
`desc: done/total unit (rate/s)` at most once every `interval` seconds, so it costs nothing on hot loops and keeps
logs short. Nothing here configures logging: the command-line entry points do.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, TextIO

logger = logging.getLogger(__name__)

_ENABLED = True


def set_enabled(flag: bool) -> None:
    """Turn progress bars and lines on or off for the whole process."""
    global _ENABLED
    _ENABLED = bool(flag)


def enabled() -> bool:
    """Whether progress bars and lines are shown (the global switch)."""
    return _ENABLED


def _tqdm_bar(desc: str, total: int | None, unit: str, stream: TextIO) -> Any | None:
    """A tqdm bar on `stream` when it is a terminal and tqdm is installed, else None (log lines instead)."""
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        interactive = False
    if not interactive:
        return None
    try:
        if os.get_terminal_size(stream.fileno()).columns == 0:  # a pty nobody sized: tqdm would draw empty bars
            return None
    except (AttributeError, OSError, ValueError):  # no file descriptor (a wrapped stream): let tqdm decide
        pass
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(desc=desc, total=total, unit=f" {unit}", unit_scale=True, file=stream, leave=False, dynamic_ncols=True)


class Progress:
    """Counts work done out of an optional total and shows it now and then (a tqdm bar or a log line).

    `enabled=False` silences this one step; the global switch (set_enabled) silences all of them.
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "rows",
        enabled: bool = True,
        interval: float = 2.0,
        stream: TextIO | None = None,
    ):
        self.desc, self.total, self.unit, self.interval = desc, total, unit, interval
        self.enabled = enabled and _ENABLED
        self.done = 0
        self.start = time.perf_counter()
        self._last_line = self.start
        self._bar = _tqdm_bar(desc, total, unit, stream or sys.stderr) if self.enabled else None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last_line >= self.interval:
            self._last_line = now
            of = f"/{self.total:,}" if self.total else ""
            rate = self.done / max(now - self.start, 1e-9)
            logger.info("%s: %s%s %s (%s/s)", self.desc, f"{self.done:,}", of, self.unit, f"{rate:,.0f}")

    def summary(self, message: str) -> str:
        """Log and return the step's closing line: what was done, in how long."""
        self.close()
        line = f"{self.desc}: {message} in {self.elapsed:.1f} s"
        logger.info("%s", line)
        return line

    def close(self) -> None:
        """Remove the bar, if any (summary does it)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
