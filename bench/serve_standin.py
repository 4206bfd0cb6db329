"""How exact is `kthybrid-serve bench-serve` on this host? Measured against known rates.

Starts the OpenAI-compatible stand-in (tests/support/openai_standin.py, its own process) with a
known time to first token and inter-token latency, runs the launcher's bench-serve sweep
against it in-process with the API key, and prints for each concurrency the measured output
tokens/s, TTFT and ITL against the true values (ratios, measured in one run). The point is the
load generator's own overhead: where its ratios leave 1.0 as concurrency grows, the client,
not the server, is the limit on this machine.

    .venv/bin/python bench/serve_standin.py   # bench/results/bench-serve-standin.{json,png}
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from kthybrid_serve.client.benchserve import SweepRequest
from kthybrid_serve.client.benchserve_progress import SweepProgress
from kthybrid_serve.client.benchserve_run import bench_serve

from tests.support import openai_standin
from tests.support.openai_standin import TEST_KEY, free_port

RESULTS = Path(__file__).resolve().parent / "results"


def _start_standin(ttft: float, itl: float) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    argv = [sys.executable, openai_standin.__file__, "--host", "127.0.0.1", "--port", str(port),
            "--ttft", str(ttft), "--itl", str(itl), "--api-key", TEST_KEY]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening" not in line:
        process.kill()
        raise SystemExit(f"the stand-in did not start: {line!r}")
    return process, f"http://127.0.0.1:{port}"


def _ratios(level: dict[str, Any], ttft: float, itl: float, tokens: int) -> dict[str, Any]:
    known_rate = level["concurrency"] * tokens / (ttft + (tokens - 1) * itl)
    return {
        "concurrency": level["concurrency"],
        "requests": level["requests"],
        "errors": level["errors"],
        "output_tokens_per_s": level["output_tokens_per_s"],
        "known_output_tokens_per_s": round(known_rate, 2),
        "rate_ratio": round(level["output_tokens_per_s"] / known_rate, 4),
        "ttft_ms_p50": level["ttft_ms_p50"],
        "ttft_ms_p99": level["ttft_ms_p99"],
        "ttft_ratio": round(level["ttft_ms_p50"] / (ttft * 1000), 4),
        "itl_ms_p50": level["itl_ms_p50"],
        "itl_ms_p99": level["itl_ms_p99"],
        "itl_ratio": round(level["itl_ms_p50"] / (itl * 1000), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttft", type=float, default=0.3, help="stand-in TTFT in seconds")
    parser.add_argument("--itl", type=float, default=0.02, help="stand-in ITL in seconds")
    parser.add_argument("--tokens", type=int, default=64, help="output tokens per request")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--levels", default="1,4,16,64", help="concurrencies")
    parser.add_argument("--output", type=Path, default=RESULTS / "bench-serve-standin.json")
    args = parser.parse_args()
    levels = tuple(int(c) for c in args.levels.split(","))

    process, url = _start_standin(args.ttft, args.itl)
    try:
        with tempfile.TemporaryDirectory(prefix="kthybrid-bench-serve-") as cache:
            request = SweepRequest(
                base_url=f"{url}/v1", api_key=TEST_KEY, concurrency=levels, prompt_tokens=128,
                output_tokens=args.tokens, duration_s=args.duration, warmup=1,
                request_timeout_s=60.0,
            )  # fmt: skip
            progress = SweepProgress(len(levels), args.duration, io.StringIO())
            result = bench_serve(request, None, None, {"XDG_CACHE_HOME": cache}, progress)
            png = result.get("png_path")
            if png:
                shutil.copyfile(png, args.output.with_suffix(".png"))
    finally:
        process.terminate()
        process.wait(timeout=10)

    rows = [_ratios(level, args.ttft, args.itl, args.tokens) for level in result["levels"]]
    record = {
        "kind": "bench-serve-standin",
        "what": "kthybrid-serve bench-serve against a stand-in with known TTFT and ITL",
        "host": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_1m": round(os.getloadavg()[0], 2),
        },
        "standin": {"ttft_s": args.ttft, "itl_s": args.itl, "output_tokens": args.tokens},
        "duration_s_per_level": args.duration,
        "levels": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{'conc':>5} {'tok/s':>9} {'known':>9} {'ratio':>6} {'TTFT p50':>9} {'ratio':>6}"
          f" {'ITL p50':>8} {'ratio':>6} {'errors':>6}")  # fmt: skip
    for r in rows:
        print(f"{r['concurrency']:>5} {r['output_tokens_per_s']:>9.1f}"
              f" {r['known_output_tokens_per_s']:>9.1f} {r['rate_ratio']:>6.3f}"
              f" {r['ttft_ms_p50']:>9.1f} {r['ttft_ratio']:>6.3f}"
              f" {r['itl_ms_p50']:>8.1f} {r['itl_ratio']:>6.3f} {r['errors']:>6}")  # fmt: skip
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
