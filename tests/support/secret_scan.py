"""Find secrets in byte streams (image layers, build history) across chunk boundaries."""

from __future__ import annotations

from collections.abc import Iterable


def scan(chunks: Iterable[bytes], needles: list[bytes]) -> list[bytes]:
    """The needles found in a byte stream, across chunk boundaries."""
    found: set[bytes] = set()
    keep = max(len(n) for n in needles)
    tail = b""
    for chunk in chunks:
        window = tail + chunk
        found.update(n for n in needles if n in window)
        tail = window[-keep:]
    return sorted(found)
