"""Time `kthybrid-serve plan` end to end in-process: host tree + V4-Flash headers -> plan.

Builds two hosts, the tutorial's (2 sockets, 4 NUMA nodes, SMT, 256 GB, one RTX 5090)
and a large one (256 CPUs: 2 sockets x 4 NUMA nodes x 16 cores with SMT, 2 TB, a CPU
quota and 8 GPUs), and a sparse DeepSeek-V4-Flash shaped checkpoint (46 shards, 66k
tensor headers) in a temporary directory, then plans each repeatedly.

    .venv/bin/python bench/plan.py            # writes bench/results/plan.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from kthybrid_serve.settings import default_settings
from kthybrid_serve.workflow import plan_and_validate

from tests.support.launcher_fixtures import GB, HostSpec, ModelSpec, build_host, build_model

REPO = Path(__file__).resolve().parent.parent

HOSTS = {
    "tutorial-4node-rtx5090": (
        HostSpec(sockets=2, nodes_per_socket=2, cores_per_node=16, mem_bytes=256 * GB),
        ("NVIDIA GeForce RTX 5090,32607MiB,12.0",),
    ),
    "256cpu-8node-8gpu": (
        HostSpec(sockets=2, nodes_per_socket=4, cores_per_node=16, mem_bytes=2048 * GB,
                 cpu_quota=(9600000, 100000)),
        ("NVIDIA GeForce RTX 5090,32607MiB,12.0",) * 8,
    ),
}  # fmt: skip


def time_plans(host: Path, model: Path, gpus: tuple[str, ...], runs: int) -> dict[str, object]:
    settings = default_settings(host_root=str(host), model=str(model), gpu=gpus)
    timings = []
    planned = None
    for _ in range(runs):
        start = time.perf_counter()
        planned = plan_and_validate(settings, {})
        timings.append(time.perf_counter() - start)
    assert planned is not None
    return {
        "cpus": len(planned.host.cpus),
        "numa_nodes": len(planned.host.nodes),
        "gpus": len(gpus),
        "seconds_median": round(statistics.median(timings), 4),
        "seconds_max": round(max(timings), 4),
        "seconds_first": round(timings[0], 4),
        "plan": {
            "kt_cpuinfer": planned.plan.kt_cpuinfer,
            "kt_threadpool_count": planned.plan.kt_threadpool_count,
            "kt_num_gpu_experts": planned.plan.kt_num_gpu_experts,
            "kt_method": planned.plan.kt_method,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "plan.json"))
    args = parser.parse_args()
    hosts: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="kthybrid-bench-") as tmp:
        root = Path(tmp)
        model = build_model(root / "DeepSeek-V4-Flash", ModelSpec())
        for name, (spec, gpus) in HOSTS.items():
            host = build_host(root / name, spec)
            hosts[name] = time_plans(host, model, gpus, args.runs)
    result = {
        "what": "read host tree + read V4-Flash safetensors headers + plan + checks, in-process",
        "runs": args.runs,
        "shards": 46,
        "tensors_in_headers": 43 * 256 * 6 + 43 * 6 + 6 * 256 + 6 + 3,
        "hosts": hosts,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    for name, figures in hosts.items():
        assert isinstance(figures, dict)
        print(
            f"{name}: planning took {figures['seconds_median']} s median, "
            f"{figures['seconds_max']} s max over {args.runs} runs"
        )
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
