"""Progress of a bench-serve sweep: which level, how far into its duration, requests and errors.

On a terminal one line is redrawn; anywhere else (container logs, pipes) a line is printed
when a level starts measuring, every `every_s` seconds while it runs, and when it ends.
The ETA counts the levels left at their duration each plus the warm-up and tail seen so far.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from kthybrid_serve.client.benchserve_stats import LevelResult
from kthybrid_serve.units import duration


class SweepProgress:
    def __init__(self, levels: int, duration_s: float, stream: TextIO, every_s: float = 30.0,
                 width: int = 24) -> None:  # fmt: skip
        self.levels, self.duration_s, self.stream = levels, duration_s, stream
        self.every_s, self.width = every_s, width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.index = 0
        self.concurrency = 0
        self.phase = "starting"
        self.level_started = self.measure_started = self.printed = time.monotonic()
        self.done = self.errors = self.warm = 0
        self.overhead = 0.0  # seconds spent outside measuring (warm-up, tails) so far

    def __call__(self, event: str, details: dict[str, Any]) -> None:
        getattr(self, f"_on_{event}")(details)

    def _on_level(self, details: dict[str, Any]) -> None:
        self.index, self.concurrency = int(details["index"]), int(details["concurrency"])
        self.phase, self.done, self.errors, self.warm = "warm-up", 0, 0, 0
        self.level_started = time.monotonic()
        self._show(f"concurrency {self.concurrency}: warm-up", force=True)

    def _on_warmup(self, details: dict[str, Any]) -> None:
        self.warm += 1
        self._show(f"concurrency {self.concurrency}: warm-up request {self.warm} done")

    def _on_measure(self, details: dict[str, Any]) -> None:
        self.phase = "measuring"
        self.measure_started = time.monotonic()
        self.overhead += self.measure_started - self.level_started
        self._show(f"concurrency {self.concurrency}: measuring for {self.duration_s:g}s",
                   force=True)  # fmt: skip

    def _on_request(self, details: dict[str, Any]) -> None:
        self.done += 1
        self.errors += details.get("error") is not None
        self._show(self._status())

    def _on_level_done(self, details: dict[str, Any]) -> None:
        level: LevelResult = details["level"]
        spent = time.monotonic() - self.measure_started
        self.overhead += max(0.0, spent - self.duration_s)
        self.index += 1
        self._show(
            f"concurrency {level.concurrency}: {level.tokens_per_s:.1f} output tokens/s, "
            f"{level.requests} requests, {level.errors} errors", force=True, end=True)  # fmt: skip

    def _status(self) -> str:
        spent = time.monotonic() - self.measure_started
        return (f"concurrency {self.concurrency}: {min(spent, self.duration_s):.0f}/"
                f"{self.duration_s:g}s, {self.done} requests, {self.errors} errors")  # fmt: skip

    def eta(self) -> str:
        left = self.levels - self.index
        if self.phase == "measuring":
            left -= 1
            current = max(0.0, self.duration_s - (time.monotonic() - self.measure_started))
        else:
            current = self.duration_s
        per_level_overhead = self.overhead / max(1, self.index) if self.index else 0.0
        return f"ETA {duration(current + left * (self.duration_s + per_level_overhead))}"

    def _line(self, text: str) -> str:
        share = self.index / self.levels if self.levels else 1.0
        filled = int(share * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        level = min(self.index + 1, self.levels)
        return f"[{bar}] level {level}/{self.levels}  {text}  {self.eta()}"

    def _show(self, text: str, force: bool = False, end: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\033[K" + self._line(text) + ("\n" if end else ""))
        elif force or now - self.printed >= self.every_s:
            self.stream.write(self._line(text) + "\n")
            self.printed = now
        else:
            return
        self.stream.flush()
