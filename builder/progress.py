"""Progress of a classic-builder build: step lines, heartbeats, the last lines for errors."""

from __future__ import annotations

import queue
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from builder.engine import Emit, short_error
from builder.errors import BuildError

HEARTBEAT_SECONDS = 30.0


class Progress:
    """Turns the engine's stream into step lines, heartbeats, and the last lines for errors.

    A step is shown once it runs (its first output, or a heartbeat), not when the cache serves
    it: a build of the last stage lists every earlier stage's steps again, all from the cache.
    """

    STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
    CACHE_HIT = re.compile(r"^ ---> Using cache$")
    STEP_IMAGE = re.compile(r"^ ---> ([0-9a-f]{12})$")
    # The classic builder's own bookkeeping, not output of the step.
    NOISE = re.compile(r"^( ---> |Removing intermediate container |Successfully (built|tagged) )")

    def __init__(self, emit: Emit, label: str) -> None:
        self.emit = emit
        self.label = label
        self.started = time.monotonic()
        self.step_started = self.started
        self.step = "starting"
        self.last_report = self.started
        self.last_lines: deque[str] = deque(maxlen=20)
        self.steps = 0
        self.cache_hits = 0
        self.pending = False
        # Images the steps of this build made (not those the cache served): short ids.
        self.created: list[str] = []
        self.from_cache = False
        self.step_is_from = False

    def elapsed(self, since: float | None = None) -> str:
        seconds = int(time.monotonic() - (since if since is not None else self.started))
        return f"{seconds // 60}m{seconds % 60:02d}s"

    def line(self, text: str) -> None:
        for raw in text.splitlines():
            stripped = re.sub(r"\x1b\[[0-9;]*m", "", raw).rstrip()
            if not stripped:
                continue
            if self.CACHE_HIT.match(stripped):
                self.cache_hits += 1
                self.pending = False
                self.from_cache = True
                continue
            image = self.STEP_IMAGE.match(stripped)
            if image:
                # FROM names an image that was there before (the base, an earlier stage).
                if not self.from_cache and not self.step_is_from:
                    self.created.append(image.group(1))
                self.from_cache = False
                continue
            match = self.STEP.match(stripped)
            if match:
                self.steps += 1
                self.step_is_from = match.group(3).upper().startswith("FROM ")
                self.step = f"step {match.group(1)}/{match.group(2)}: {match.group(3)[:90]}"
                self.step_started = self.last_report = time.monotonic()
                self.pending = True
            elif not self.NOISE.match(stripped):
                self._show_step()
                self.last_lines.append(stripped)

    def _show_step(self) -> None:
        if self.pending:
            self.pending = False
            self.emit(f"[{self.label} {self.elapsed()}] {self.step}")

    def summary(self) -> str:
        return f"{self.steps} steps, {self.cache_hits} from the cache"

    def heartbeat(self) -> None:
        self._show_step()
        self.last_report = time.monotonic()
        latest = f"; latest output: {self.last_lines[-1][:100]}" if self.last_lines else ""
        self.emit(
            f"[{self.label} {self.elapsed()}] still on {self.step} "
            f"({self.elapsed(self.step_started)} in this step{latest})"
        )


def stream_build(chunks: Iterator[dict[str, Any]], progress: Progress) -> str:
    """Consume the build stream with heartbeats; returns the image id."""
    events: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue()

    def reader() -> None:
        try:
            for chunk in chunks:
                events.put(chunk)
        except BaseException as error:  # handed to the main thread
            events.put(error)
        events.put(None)

    threading.Thread(target=reader, daemon=True).start()
    image_id = ""
    while True:
        # A heartbeat every HEARTBEAT_SECONDS without a new step, however chatty the step is.
        wait = HEARTBEAT_SECONDS - (time.monotonic() - progress.last_report)
        try:
            event = events.get(timeout=max(wait, 0.1))
        except queue.Empty:
            progress.heartbeat()
            continue
        if event is None:
            break
        if isinstance(event, BaseException):
            raise BuildError(f"the Docker engine stopped the build: {short_error(event)}")
        if "error" in event:
            tail = "\n  ".join(progress.last_lines)
            raise BuildError(
                f"build failed at {progress.step}: {str(event['error']).strip()}\n"
                f"last lines:\n  {tail}"
            )
        if "stream" in event:
            progress.line(str(event["stream"]))
        aux = event.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = str(aux["ID"])
    if not image_id:
        raise BuildError(f"the engine ended the build without an image at {progress.step}")
    return image_id
