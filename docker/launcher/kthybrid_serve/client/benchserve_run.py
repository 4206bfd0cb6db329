"""bench-serve end to end: sweep, the JSON and PNG under `$XDG_CACHE_HOME/bench/`, the result.

The files sit next to the CPU bench's (`kthybrid-serve bench`): `serving.json` and
`serving.png`, replaced whole by each run (written to a temporary name, then renamed).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kthybrid_serve.apikey import read_api_key
from kthybrid_serve.client.benchserve import Say, SweepRequest, run_sweep
from kthybrid_serve.client.benchserve_stats import level_json
from kthybrid_serve.external import reachable_host
from kthybrid_serve.settings import Settings

STEM = "serving"


def bench_dir(environ: Mapping[str, str]) -> Path:
    """$XDG_CACHE_HOME/bench (the image sets /cache, the cache volume), else ~/.cache/bench."""
    root = environ.get("XDG_CACHE_HOME")
    base = Path(root) if root else Path(environ.get("HOME", "~")).expanduser() / ".cache"
    return base / "bench"


def default_levels(max_running: int) -> tuple[int, ...]:
    """1, 2, 4 ... while below the server's max running requests, then that number itself."""
    levels, level = [], 1
    while level < max_running:
        levels.append(level)
        level *= 2
    return (*levels, max_running)


def sweep_request(settings: Settings) -> SweepRequest:
    """What to measure, from the same options the server reads (host, port, key file)."""
    key = read_api_key(settings.api_key_file) if settings.api_key_file else None
    levels = settings.bench_concurrency or default_levels(settings.max_running_requests)
    return SweepRequest(
        base_url=f"http://{reachable_host(settings.host)}:{settings.port}/v1",
        api_key=key,
        concurrency=tuple(sorted(levels)),
        prompt_tokens=settings.bench_prompt_tokens,
        output_tokens=settings.bench_output_tokens,
        duration_s=float(settings.bench_duration),
        warmup=settings.bench_warmup,
    )


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def sweep_json(request: SweepRequest, model: str, levels: list[dict[str, Any]],
               ceiling: float | None, ceiling_note: str | None) -> dict[str, Any]:  # fmt: skip
    return {
        "kind": "bench-serve",
        "url": request.base_url,
        "model": model,
        "api_key": request.api_key is not None,
        "prompt_tokens": request.prompt_tokens,
        "output_tokens": request.output_tokens,
        "duration_s": request.duration_s,
        "warmup_per_worker": request.warmup,
        "concurrency": list(request.concurrency),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_decode_ceiling_tokens_per_s": ceiling,
        "ceiling_note": ceiling_note,
        "levels": levels,
    }


def bench_serve(request: SweepRequest, ceiling: float | None, ceiling_note: str | None,
                environ: Mapping[str, str], say: Say) -> dict[str, Any]:  # fmt: skip
    """Run the sweep; write JSON and PNG; return the JSON (with the paths it was written to)."""
    from kthybrid_serve.client.benchserve_plot import render_png
    from kthybrid_serve.drawing import PlotError

    sweep = run_sweep(request, say)
    result = sweep_json(request, sweep.model, [level_json(level) for level in sweep.levels],
                        ceiling, ceiling_note)  # fmt: skip
    directory = bench_dir(environ)
    json_path = directory / f"{STEM}.json"
    png_path = directory / f"{STEM}.png"
    result["json_path"] = str(json_path)
    try:
        partial = png_path.with_name(f".{png_path.name}.partial")
        render_png(result, partial)
        os.replace(partial, png_path)
        result["png_path"], result["plot_error"] = str(png_path), None
    except PlotError as error:
        result["png_path"], result["plot_error"] = None, str(error)
    _write_atomic(json_path, json.dumps(result, indent=2) + "\n")
    return result
