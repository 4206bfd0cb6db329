"""Byte sizes: parse "32GiB"/"80GB"/"65536k" and format them for people; durations too."""

from __future__ import annotations

import re

GIB = 1024**3
MIB = 1024**2
KIB = 1024

_UNITS = {
    "": 1,
    "b": 1,
    "k": KIB,
    "kb": 1000,
    "kib": KIB,
    "m": MIB,
    "mb": 1000**2,
    "mib": MIB,
    "g": GIB,
    "gb": 1000**3,
    "gib": GIB,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes from "32GiB", "141GB", "65536k" or a plain number of bytes."""
    match = _SIZE.match(text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (expected e.g. 32GiB, 141GB, 65536k)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def gib(size: int) -> str:
    """A byte count as GiB with one decimal, the unit every plan line uses."""
    return f"{size / GIB:.1f} GiB"


def duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m (progress lines and ETAs)."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
