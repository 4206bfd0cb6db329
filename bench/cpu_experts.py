"""kt-kernel's CPU experts on this host: the plan's thread count against a sweep and the bandwidth.

Reads the host the way `kthybrid-serve plan` does (GPUs from NVML unless --gpu is given),
takes the expert shape from --model or from a sparse DeepSeek-V4-Flash shaped checkpoint it
builds in a temporary directory (as bench/plan.py does), plans the threads with the
launcher's rule, and runs the launcher's bench (kthybrid_serve.cpubench.sweep): read bandwidth,
then kt-kernel's decode MoE for the plan's layout, a sweep around it, the tutorial's and
upstream's values. kt-kernel must be importable (the image; or PYTHONPATH with its wheel's
kt_kernel/ and kt_kernel.libs/). Writes bench/results/cpu-experts-<host>[-<method>].json
and the plot next to it.

    python bench/cpu_experts.py --host-name avx512-dev
    python bench/cpu_experts.py --host-name amx-h200host --method AMXINT4
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from kthybrid_serve.cpubench.measure import bench_inputs, measure
from kthybrid_serve.cpubench.plot import render_png, render_table
from kthybrid_serve.drawing import PlotError
from kthybrid_serve.settings import Value, resolve_settings

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host-name", required=True, help="names the output files")
    parser.add_argument("--model", help="a model directory (default: V4-Flash shaped, sparse)")
    parser.add_argument("--method", help="default: what the plan picks for the model's weights")
    parser.add_argument("--gpu", action="append", default=[], help="NAME,MEMORY,CC (default NVML)")
    parser.add_argument("--seconds", type=float, default=1.5, help="measured seconds per run")
    parser.add_argument("--output-dir", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    # A time limit's SIGTERM unwinds: workers are killed and THP and pools are put back.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="kthybrid-bench-") as tmp:
        model_dir = args.model
        if model_dir is None:
            from tests.support.launcher_fixtures import ModelSpec, build_model

            model_dir = str(build_model(Path(tmp) / "DeepSeek-V4-Flash", ModelSpec()))
        given: dict[str, Value] = {"model": model_dir}
        if args.gpu:
            given["gpu"] = tuple(args.gpu)
        inputs = bench_inputs(resolve_settings(given, {}), os.environ)
    if args.method:  # e.g. AMXINT4 as if the checkpoint had been converted
        inputs = replace(inputs, method=args.method)
    plan = inputs.rule
    print(
        f"plan (rule): {plan.cpuinfer} threads in {len(plan.nodes)} pool(s) on node(s) "
        f"{','.join(map(str, plan.nodes))} ({len(inputs.host.gpus)} GPU(s) seen); "
        f"method {inputs.method}",
        flush=True,
    )
    result = measure(inputs, plan, lambda line: print(line, flush=True))
    result["host_name"] = args.host_name
    method = inputs.method
    print(render_table(result))
    suffix = "" if method == "MXFP4" else f"-{method}"
    output = Path(args.output_dir) / f"cpu-experts-{args.host_name}{suffix}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {output}")
    try:
        print(f"-> {render_png(result, output.with_suffix('.png'))}")
    except PlotError as error:
        print(f"no plot: {error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
