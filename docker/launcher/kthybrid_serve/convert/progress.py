"""Progress of a conversion, layer by layer, with an ETA from the layers converted so far.

On a terminal one line is redrawn (a bar); anywhere else (container logs, pipes) each finished
layer prints one line, so logs stay readable.
"""

from __future__ import annotations

import time
from typing import TextIO

from kthybrid_serve.units import duration


class Progress:
    def __init__(self, total: int, done: int, stream: TextIO, width: int = 30) -> None:
        self.total = total
        self.done = done
        self.stream = stream
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.converted = 0
        self.spent = 0.0
        self.started = time.monotonic()

    def eta(self) -> str:
        if self.converted == 0:
            return "ETA after the first layer"
        remaining = self.total - self.done
        return f"ETA {duration(self.spent / self.converted * remaining)}"

    def _line(self, text: str) -> str:
        share = self.done / self.total if self.total else 1.0
        filled = int(share * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        return f"[{bar}] {self.done}/{self.total} layers {share:4.0%}  {text}  {self.eta()}"

    def working(self, name: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self._line(f"converting {name}"))
            self.stream.flush()

    def layer_done(self, name: str, seconds: float) -> None:
        self.done += 1
        self.converted += 1
        self.spent += seconds
        line = self._line(f"{name} converted in {seconds:.1f}s")
        self.stream.write(("\r\033[K" + line) if self.tty else line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
