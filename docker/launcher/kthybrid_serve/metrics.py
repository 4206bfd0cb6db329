"""The plan as Prometheus metrics, served on sglang's own /metrics scrape.

sglang's /metrics (`--enable-metrics`) serves prometheus_client's multiprocess registry: every
`*.db` file in PROMETHEUS_MULTIPROC_DIR. Before the server starts, `serve` makes a fresh
directory, writes the plan's gauges into one file of it and hands the directory to the
server in PROMETHEUS_MULTIPROC_DIR, so one scrape carries sglang's metrics and the plan's,
with no second process. The file is written with prometheus_client's own multiprocess
format (a `mostrecent` gauge file: no pid label, read by MultiProcessCollector).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kthybrid_serve.errors import MetricsError
from kthybrid_serve.plan.plan import Plan
from kthybrid_serve.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# MultiProcessCollector reads the type and the gauge mode from the name: gauge_<mode>_<id>.db.
PLAN_FILE = "gauge_mostrecent_kthybrid.db"

INFO = "kthybrid_plan_info"
THREADS = "kthybrid_plan_cpu_threads"
GPU_EXPERTS = "kthybrid_plan_gpu_experts"
EXPERT_BYTES = "kthybrid_plan_cpu_expert_bytes"
MEMORY_BUDGET = "kthybrid_plan_host_memory_budget_bytes"
CEILING = "kthybrid_plan_cpu_decode_ceiling_tokens_per_second"
START_TIME = "kthybrid_server_start_time_seconds"

HELP = {
    INFO: "The launcher's plan: kt-kernel method, where the thread counts came from "
    "(measured by tune, the rule, or given), hugepage mode, GPU target, model (value 1).",
    THREADS: "CPU expert threads planned for each kt-kernel pool and the NUMA node it is "
    "pinned to.",
    GPU_EXPERTS: "Routed experts per MoE layer kept on the GPU (--kt-num-gpu-experts).",
    EXPERT_BYTES: "Bytes of routed expert weights held in host memory for the CPU.",
    MEMORY_BUDGET: "Host memory the plan needs for the CPU experts, with overhead.",
    CEILING: "Decode tokens/s the CPU experts allow at the bandwidth measured by "
    "`kthybrid-serve tune` (absent until tuned).",
    START_TIME: "Unix time at which the launcher started the server.",
}


@dataclass(frozen=True)
class Sample:
    metric: str
    labels: tuple[tuple[str, str], ...]
    value: float


def thread_source(plan: Plan) -> str:
    """'measured' (a tune record), 'rule' (the planner), 'given' (a flag or variable), 'none'."""
    if plan.gpu_only:
        return "none"
    for item in plan.items:
        if item.name == "--kt-cpuinfer":
            if item.source == "measured":
                return "measured"
            return "rule" if item.source == "planned" else "given"
    raise MetricsError("the plan has no --kt-cpuinfer item; cannot say where its threads came from")


def plan_samples(plan: Plan, settings: Settings, model_name: str, started: float) -> list[Sample]:
    """Every sample the plan exports; the same numbers as `plan --json`."""
    info = (
        ("method", plan.kt_method or "none"),
        ("thread_source", thread_source(plan)),
        ("hugepages", settings.hugepages),
        ("target", plan.target or "none"),
        ("model", model_name),
        ("gpu_only", "true" if plan.gpu_only else "false"),
    )
    samples = [
        Sample(INFO, info, 1.0),
        Sample(GPU_EXPERTS, (), float(plan.kt_num_gpu_experts)),
        Sample(EXPERT_BYTES, (), float(plan.cpu_expert_bytes)),
        Sample(MEMORY_BUDGET, (), float(plan.host_memory_needed)),
        Sample(START_TIME, (), started),
    ]
    for pool, (node, threads) in enumerate(
        zip(plan.kt_numa_nodes, plan.threads_per_pool, strict=True)
    ):
        samples.append(Sample(THREADS, (("pool", str(pool)), ("node", str(node))), float(threads)))
    if plan.cpu_decode_ceiling is not None:
        samples.append(Sample(CEILING, (), plan.cpu_decode_ceiling))
    return samples


def write_samples(directory: Path, samples: list[Sample], timestamp: float) -> Path:
    """Write the samples as one multiprocess gauge file; raises MetricsError."""
    try:
        from prometheus_client.mmap_dict import MmapedDict, mmap_key
    except ImportError as error:
        raise MetricsError(
            f"prometheus_client is not installed ({error}); it comes with sglang-kt in the "
            "image: run the launcher there, or set KTHYBRID_ENABLE_METRICS=false"
        ) from error
    path = directory / PLAN_FILE
    try:
        # prometheus_client's file format has no annotations.
        store = MmapedDict(str(path))  # type: ignore[no-untyped-call]
        try:
            for s in samples:
                if math.isnan(s.value):
                    raise MetricsError(f"{s.metric} has no value (NaN)")
                names = [k for k, _ in s.labels]
                values = [v for _, v in s.labels]
                key = mmap_key(s.metric, s.metric, names, values, HELP[s.metric])
                store.write_value(key, s.value, timestamp)  # type: ignore[no-untyped-call]
        finally:
            store.close()  # type: ignore[no-untyped-call]
    except OSError as error:
        raise MetricsError(f"cannot write the plan's metrics to {path}: {error}") from error
    return path


def metrics_dir(environ: Mapping[str, str]) -> Path:
    """A fresh directory for this start (a restarted server must not read the last run's
    counters): inside PROMETHEUS_MULTIPROC_DIR when it is set, else in the temp dir."""
    parent = environ.get(MULTIPROC_ENV) or None
    try:
        return Path(tempfile.mkdtemp(prefix="kthybrid-metrics-", dir=parent))
    except OSError as error:
        where = f"{MULTIPROC_ENV}={parent}" if parent else tempfile.gettempdir()
        raise MetricsError(
            f"cannot make the metrics directory in {where}: {error}; mount a writable "
            "directory there or set KTHYBRID_ENABLE_METRICS=false"
        ) from error


def prepare_metrics(
    plan: Plan, settings: Settings, model_name: str, environ: Mapping[str, str], now: float
) -> dict[str, str]:
    """Write the plan's gauges for the server's /metrics; the variables the server needs."""
    directory = metrics_dir(environ)
    write_samples(directory, plan_samples(plan, settings, model_name, now), now)
    os.chmod(directory, 0o700)
    return {MULTIPROC_ENV: str(directory)}
