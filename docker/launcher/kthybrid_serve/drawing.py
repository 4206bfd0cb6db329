"""Pillow for the launcher's plots (the CPU bench's and bench-serve's), imported only when a
plot is made, so the launcher imports without it; the error, fonts and axis steps they share."""

from __future__ import annotations

import importlib
from typing import Any


class PlotError(Exception):
    """No PNG could be made (the reason is the message)."""


def pillow() -> tuple[Any, Any, Any]:
    """PIL's Image, ImageDraw and ImageFont modules."""
    try:
        modules = tuple(importlib.import_module(f"PIL.{name}")
                        for name in ("Image", "ImageDraw", "ImageFont"))  # fmt: skip
    except ImportError as error:
        raise PlotError(f"Pillow is not installed ({error}); the JSON has every figure") from error
    return modules[0], modules[1], modules[2]


def font(font_module: Any, size: int) -> Any:
    try:
        return font_module.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return font_module.load_default()


def ticks(top: float, count: int = 6) -> list[float]:
    """Round steps from 0 to at least `top`."""
    raw = top / count
    magnitude = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 0.1
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(top / step) + 1)]
