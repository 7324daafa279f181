"""Progress of an import on stderr: a tqdm bar (resources/s, ETA) on a terminal, plain
periodic lines otherwise (a log file or CI output gets no control characters)."""

from __future__ import annotations

import sys
import time
from typing import IO

from tqdm import tqdm

PLAIN_EVERY = 5.0  # seconds between plain lines


class Progress:
    def __init__(self, total: int, *, enabled: bool = True, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self.enabled = enabled
        self._started = time.monotonic()
        self._last_line = self._started
        self._bar = None
        if enabled and self.stream.isatty():
            self._bar = tqdm(total=total, unit=" res", file=self.stream, smoothing=0.1)

    def update(self, count: int, what: str = "") -> None:
        if count <= 0:
            return
        self.done += count
        if self._bar is not None:
            self._bar.set_description(what, refresh=False)
            self._bar.update(count)
            return
        now = time.monotonic()
        if self.enabled and now - self._last_line >= PLAIN_EVERY:
            self._last_line = now
            self._line(now, what)

    def _line(self, now: float, what: str) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f"{left:,.0f} s" if left != float("inf") else "?"
        print(
            f"import: {self.done:,}/{self.total:,} resources, {rate:,.0f}/s, ETA {eta} {what}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._line(time.monotonic(), "")
