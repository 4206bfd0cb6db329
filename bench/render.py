"""Benchmark: time to validate and render every target; writes bench/results/render.json."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

from builder.matrix import load_targets, load_versions
from builder.render import render_all

RESULTS = Path(__file__).parent / "results" / "render.json"


def main() -> None:
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        files = render_all(load_targets(), load_versions())
        timings.append(time.perf_counter() - started)
    result = {
        "what": "load + schema-validate both data files, render every generated file",
        "targets": len(load_targets()),
        "files": len(files),
        "runs": len(timings),
        "seconds_median": round(statistics.median(timings), 4),
        "seconds_max": round(max(timings), 4),
        "seconds_first": round(timings[0], 4),
        "python": platform.python_version(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
