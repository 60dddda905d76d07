"""A tiny progress bar for the command-line tools (no dependency).

On a terminal it redraws one line (`\\r`); when stderr is not a terminal (logs, CI) it
prints at most one line per 10% so logs stay short. Use as a context manager:

    with Progress(total=n, label="encode", unit="frames") as bar:
        for ...:
            bar.update(1)
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int | None, label: str = "", unit: str = "", stream: TextIO | None = None,
                 width: int = 30, min_interval: float = 0.1):
        self.total = total if total and total > 0 else None
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.min_interval = min_interval
        self.done = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self._tty:
            if now - self._last_draw >= self.min_interval:
                self._last_draw = now
                self.stream.write("\r" + self.render())
                self.stream.flush()
        elif self.total:
            decile = min(10, self.done * 10 // self.total)
            if decile > self._last_decile and decile < 10:
                self._last_decile = decile
                self.stream.write(self.render() + "\n")

    def render(self) -> str:
        elapsed = time.monotonic() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        unit = f" {self.unit}" if self.unit else ""
        head = f"{self.label}: " if self.label else ""
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = int(round(frac * self.width))
            bar = "#" * filled + "-" * (self.width - filled)
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            eta_s = f" eta {eta:5.1f}s" if eta == eta else ""
            return f"{head}[{bar}] {100 * frac:5.1f}% {self.done}/{self.total}{unit} {rate:.1f}{unit}/s{eta_s}"
        return f"{head}{self.done}{unit} {rate:.1f}{unit}/s {elapsed:.1f}s"

    def close(self) -> None:
        line = self.render()
        self.stream.write(("\r" + line + "\n") if self._tty else (line + "\n"))
        self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
