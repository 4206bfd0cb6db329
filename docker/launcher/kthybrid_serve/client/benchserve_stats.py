"""Figures of one bench-serve level: output tokens/s, TTFT and inter-token latency percentiles.

Percentiles interpolate linearly between the nearest ranks (as numpy's default does, which
`sglang.bench_serving` uses). Throughput is the output tokens that arrived inside the level's
measuring window over the window's length: the window opens at the level's first token (the
first prefill of all workers at once is a ramp, not the steady state) and closes at the end
of its duration; tokens of requests still running then count up to the end, so workers
idling after their last request do not lower the figure. A chunk
carries the request's tokens over its chunks (more than one when MTP accepts drafts).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class RequestResult:
    start: float
    end: float
    chunk_times: tuple[float, ...]  # when each content chunk arrived (same clock as start)
    output_tokens: int  # the server's usage figure, else the content chunks; 0 on error
    error: str | None

    @property
    def ttft(self) -> float | None:
        """Seconds to the first content chunk; None if none came."""
        return self.chunk_times[0] - self.start if self.chunk_times else None

    @property
    def gaps(self) -> tuple[float, ...]:
        """Seconds between content chunks (the inter-token latencies)."""
        times = self.chunk_times
        return tuple(b - a for a, b in itertools.pairwise(times))

    def tokens_between(self, start: float, end: float) -> float:
        if not self.chunk_times:
            return 0.0
        inside = sum(1 for t in self.chunk_times if start <= t <= end)
        return inside * self.output_tokens / len(self.chunk_times)


@dataclass(frozen=True)
class LevelResult:
    concurrency: int
    requests: int  # completed without error (started inside the window)
    errors: int  # failed, dropped, or cut at the time limit
    error_kinds: dict[str, int]  # the distinct messages and how often each came
    duration_s: float
    output_tokens: int  # of the completed requests, all of them
    tokens_per_s: float  # tokens that arrived inside the window / its length
    ttft_ms: dict[int, float | None]
    itl_ms: dict[int, float | None]
    e2e_ms_p50: float | None
    decode_tokens_per_s_p50: float | None  # one request's own rate: 1 / its median gap


def percentile(values: Sequence[float], share: float) -> float | None:
    """The `share` (0-100) percentile with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * share / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(values: Sequence[float]) -> dict[int, float | None]:
    result: dict[int, float | None] = {}
    for share in PERCENTILES:
        value = percentile(values, share)
        result[share] = None if value is None else value * 1000
    return result


def summarise(concurrency: int, results: Sequence[RequestResult], window: tuple[float, float],
              cut: int = 0) -> LevelResult:  # fmt: skip
    """The level's figures; `window` is (start, end) of its measuring time."""
    good = [r for r in results if r.error is None]
    kinds = Counter(r.error for r in results if r.error is not None)
    if cut:
        kinds["cut at the level's time limit"] += cut
    tokens = sum(r.output_tokens for r in good)
    firsts = [r.chunk_times[0] for r in good if r.chunk_times]
    opened = min(firsts) if firsts and min(firsts) < window[1] else window[0]
    duration = window[1] - opened
    in_window = sum(r.tokens_between(opened, window[1]) for r in good)
    gaps = [g for r in good for g in r.gaps]
    medians = [m for r in good if (m := percentile(r.gaps, 50))]
    median_gap = percentile(medians, 50)
    e2e = percentile([r.end - r.start for r in good], 50)
    return LevelResult(
        concurrency=concurrency,
        requests=len(good),
        errors=sum(kinds.values()),
        error_kinds=dict(kinds),
        duration_s=duration,
        output_tokens=tokens,
        tokens_per_s=in_window / duration if duration > 0 else 0.0,
        ttft_ms=_ms([r.ttft for r in good if r.ttft is not None]),
        itl_ms=_ms(gaps),
        e2e_ms_p50=None if e2e is None else e2e * 1000,
        decode_tokens_per_s_p50=1 / median_gap if median_gap else None,
    )


def level_json(level: LevelResult) -> dict[str, Any]:
    def named(figures: dict[int, float | None], prefix: str) -> dict[str, float | None]:
        return {f"{prefix}_p{k}": None if v is None else round(v, 3) for k, v in figures.items()}

    return {
        "concurrency": level.concurrency,
        "requests": level.requests,
        "errors": level.errors,
        "error_kinds": level.error_kinds,
        "duration_s": round(level.duration_s, 3),
        "output_tokens": level.output_tokens,
        "output_tokens_per_s": round(level.tokens_per_s, 3),
        **named(level.ttft_ms, "ttft_ms"),
        **named(level.itl_ms, "itl_ms"),
        "e2e_ms_p50": None if level.e2e_ms_p50 is None else round(level.e2e_ms_p50, 3),
        "decode_tokens_per_s_p50": (
            None if level.decode_tokens_per_s_p50 is None
            else round(level.decode_tokens_per_s_p50, 3)
        ),
    }  # fmt: skip


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(result: dict[str, Any]) -> str:
    """The sweep as a text table (one row per concurrency), with the ceiling under it."""
    head = ("conc", "req", "err", "out tok/s", "TTFT p50", "p95", "p99", "ITL p50", "p95", "p99",
            "tok/s/req")  # fmt: skip
    rows: list[tuple[str, ...]] = [head]
    for level in result["levels"]:
        rows.append((
            str(level["concurrency"]), str(level["requests"]), str(level["errors"]),
            _cell(level["output_tokens_per_s"]),
            *(_cell(level[f"ttft_ms_p{p}"]) for p in PERCENTILES),
            *(_cell(level[f"itl_ms_p{p}"]) for p in PERCENTILES),
            _cell(level["decode_tokens_per_s_p50"]),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("(TTFT and ITL in ms; tok/s/req: one request's decode rate, 1 / its median ITL)")
    ceiling = result.get("cpu_decode_ceiling_tokens_per_s")
    lines.append(
        f"CPU decode ceiling of the plan: {ceiling:.1f} tokens/s per sequence"
        if ceiling is not None
        else f"CPU decode ceiling: {result.get('ceiling_note') or 'not known'}"
    )
    for level in result["levels"]:
        for message, count in level["error_kinds"].items():
            lines.append(f"concurrency {level['concurrency']}: {count} x {message}")
    return "\n".join(lines)
