"""A PNG of one bench-serve sweep: output tokens/s (top) and latency (bottom) per concurrency.

The plan's CPU decode ceiling, when known, is drawn on the top panel twice: as it is (tokens/s
of one sequence) and times the concurrency (what the CPU experts allow if every sequence
reached it). Pillow, as in the CPU bench's plot.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kthybrid_serve.drawing import PlotError, font, pillow, ticks

WIDTH, HEIGHT = 960, 760
LEFT, RIGHT, TOP, GAP, BOTTOM = 80, 250, 70, 70, 50
PANEL_H = (HEIGHT - TOP - GAP - BOTTOM) // 2
COLOURS = {
    "tokens": (31, 119, 180),
    "ceiling": (214, 39, 40),
    "ttft": (148, 103, 189),
    "itl": (44, 160, 44),
    "axis": (40, 40, 40),
    "grid": (225, 225, 225),
}
LINES = {name: COLOURS[name] for name in ("tokens", "ceiling", "ttft", "itl")}


class _Panel:
    """One chart: x is concurrency on a log2 scale, y from 0 to `top`."""

    def __init__(self, draw: Any, fonts: tuple[Any, Any], levels: Sequence[int], y0: int,
                 top: float, label: str) -> None:  # fmt: skip
        self.draw, (self.small, self.normal) = draw, fonts
        self.levels, self.y0 = levels, y0
        marks = ticks(top if top > 0 else 1.0)
        self.top = max(top, marks[-1], 1e-9)
        self.width = WIDTH - LEFT - RIGHT
        for tick in marks:
            y = self.y(tick)
            draw.line([(LEFT, y), (LEFT + self.width, y)], fill=COLOURS["grid"])
            draw.text((LEFT - 8, y), f"{tick:g}", fill=COLOURS["axis"], font=self.small,
                      anchor="rm")  # fmt: skip
        for level in levels:
            x = self.x(level)
            draw.line([(x, y0 + PANEL_H), (x, y0 + PANEL_H + 5)], fill=COLOURS["axis"])
            draw.text((x, y0 + PANEL_H + 8), str(level), fill=COLOURS["axis"], font=self.small,
                      anchor="mt")  # fmt: skip
        draw.rectangle([LEFT, y0, LEFT + self.width, y0 + PANEL_H], outline=COLOURS["axis"])
        draw.text((LEFT, y0 - 20), label, fill=COLOURS["axis"], font=self.normal)

    def x(self, level: float) -> float:
        import math

        low, high = math.log2(min(self.levels)), math.log2(max(self.levels))
        span = (high - low) or 1.0
        pad = 0.06 * self.width
        return LEFT + pad + (math.log2(level) - low) / span * (self.width - 2 * pad)

    def y(self, value: float) -> float:
        return self.y0 + PANEL_H - min(value, self.top) / self.top * PANEL_H

    def series(self, points: Sequence[tuple[int, float | None]], colour: Any,
               dashed: bool = False) -> None:  # fmt: skip
        xy = [(self.x(c), self.y(v)) for c, v in points if v is not None]
        if dashed:
            for (x1, y1), (x2, y2) in itertools.pairwise(xy):
                steps = max(1, int(abs(x2 - x1) / 12))
                for i in range(0, steps, 2):
                    a, b = i / steps, min(1.0, (i + 1) / steps)
                    self.draw.line([(x1 + (x2 - x1) * a, y1 + (y2 - y1) * a),
                                    (x1 + (x2 - x1) * b, y1 + (y2 - y1) * b)],
                                   fill=colour, width=2)  # fmt: skip
            return
        if len(xy) > 1:
            self.draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            self.draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)


def _legend(draw: Any, font: Any, y: int, entries: Sequence[tuple[Any, str]]) -> None:
    x = WIDTH - RIGHT + 16
    for colour, text in entries:
        draw.rectangle([x, y + 3, x + 12, y + 15], fill=colour)
        draw.text((x + 18, y), text, fill=COLOURS["axis"], font=font)
        y += 22


def render_png(result: Mapping[str, Any], path: Path) -> Path:
    """Write the plot of `result` (the bench-serve JSON) to `path`."""
    image_mod, draw_mod, font_mod = pillow()
    levels: Sequence[Mapping[str, Any]] = result["levels"]
    if not any(level["requests"] for level in levels):
        raise PlotError("no request completed; nothing to plot")
    image = image_mod.new("RGB", (WIDTH, HEIGHT), "white")
    draw = draw_mod.Draw(image)
    fonts = (font(font_mod, 13), font(font_mod, 15))
    concurrency = [int(level["concurrency"]) for level in levels]
    pick: Callable[[str], list[tuple[int, float | None]]] = lambda key: [  # noqa: E731
        (int(level["concurrency"]), level[key]) for level in levels
    ]
    ceiling = result.get("cpu_decode_ceiling_tokens_per_s")
    tokens_top = max(float(level["output_tokens_per_s"]) for level in levels)
    if ceiling is not None:
        tokens_top = max(tokens_top, float(ceiling) * max(concurrency))
    upper = _Panel(draw, fonts, concurrency, TOP, tokens_top * 1.12, "output tokens/s")
    upper.series(pick("output_tokens_per_s"), LINES["tokens"])
    entries = [(LINES["tokens"], "measured output tokens/s")]
    if ceiling is not None:
        upper.series([(c, float(ceiling)) for c in concurrency], LINES["ceiling"], dashed=True)
        upper.series([(c, float(ceiling) * c) for c in concurrency], LINES["ceiling"],
                     dashed=True)  # fmt: skip
        entries.append((LINES["ceiling"], f"CPU decode ceiling {float(ceiling):.1f}/seq, x conc"))
    _legend(draw, fonts[0], TOP, entries)

    latency = [v for key in ("ttft_ms_p95", "itl_ms_p95") for _, v in pick(key) if v is not None]
    lower_y = TOP + PANEL_H + GAP
    lower = _Panel(draw, fonts, concurrency, lower_y, max(latency or [1.0]) * 1.12,
                   "latency (ms)")  # fmt: skip
    lower.series(pick("ttft_ms_p50"), LINES["ttft"])
    lower.series(pick("ttft_ms_p95"), LINES["ttft"], dashed=True)
    lower.series(pick("itl_ms_p50"), LINES["itl"])
    lower.series(pick("itl_ms_p95"), LINES["itl"], dashed=True)
    _legend(draw, fonts[0], lower_y, [(LINES["ttft"], "TTFT p50 (p95 dashed)"),
                                      (LINES["itl"], "ITL p50 (p95 dashed)")])  # fmt: skip
    draw.text((LEFT + (WIDTH - LEFT - RIGHT) / 2, HEIGHT - 16), "concurrent requests",
              fill=COLOURS["axis"], font=fonts[1], anchor="mm")  # fmt: skip
    title = (
        f"bench-serve {result['model']}: prompt {result['prompt_tokens']} tokens, "
        f"output {result['output_tokens']} tokens, {result['duration_s']:g} s per level"
    )
    draw.text((LEFT, 12), title, fill=COLOURS["axis"], font=fonts[1])
    draw.text((LEFT, 32), str(result["url"]), fill=COLOURS["axis"], font=fonts[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
