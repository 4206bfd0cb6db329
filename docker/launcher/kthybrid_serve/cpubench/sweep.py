"""`kthybrid-serve bench`: kt-kernel's CPU experts against the host's read bandwidth.

Decode speed of the hybrid server is bound by how fast the host streams routed-expert
weights: each token reads its top-k experts in every MoE layer the CPU serves. This module
measures, in one run:

- the host's read bandwidth: one thread per allowed physical core reading (memchr for a
  byte that is not there, glibc's vectorised scan) a buffer much larger than the last-level
  cache that those threads first touched, per NUMA node and all nodes at once;
- kt-kernel's single-token decode MoE at the model's expert shapes with the method the plan
  picks, in a fresh process per pool layout (kthybrid_serve.cpubench.worker): the plan's layout, a
  sweep of threads per pool around it, the tutorial's hand-tuned values scaled to this host,
  and upstream's defaults (`kt run`: 0.8 x logical CPUs; sglang-kt: 2 pools).

Figures are GB/s of expert weights streamed (tokens x MoE layers x top-k x bytes per expert
in the kernel's format, over wall time), so they compare directly with the read bandwidth.
kt-kernel and its variant matter only inside the worker; this module imports neither.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kthybrid_serve.cpubench.bandwidth import HostCpus, read_bandwidth
from kthybrid_serve.cpubench.worker import RunSpec
from kthybrid_serve.errors import BenchError
from kthybrid_serve.model.experts import METHODS, ExpertShape, bytes_per_expert
from kthybrid_serve.units import GIB, MIB

# The tutorial's hand-tuned command ran `--kt-cpuinfer 60 --kt-threadpool-count 2` on a
# 2-socket host with 64 physical cores (4 NUMA nodes of 16); scaled to a host by its cores.
TUTORIAL_THREADS = 60
TUTORIAL_CORES = 64
TUTORIAL_POOLS = 2
# Upstream defaults: `kt run` takes int(0.8 x logical CPUs) threads (kt_kernel/cli/commands/
# run.py); sglang-kt's --kt-threadpool-count defaults to 2, pool i pinned to node i.
UPSTREAM_THREAD_FRACTION = 0.8
UPSTREAM_POOLS = 2

SWEEP_RADIUS = 3  # threads per pool either side of the plan's
WORKING_SET_LLC_MULTIPLE = 16  # expert bytes loaded, and read-bandwidth buffer, vs the LLC
WORKING_SET_FLOOR = 1 * GIB
MEMORY_SHARE = 0.25  # of the memory available, at most, for one run's buffers
WORKER_BASE_TIMEOUT = 120.0
WORKER_TIMEOUT_PER_GIB = 20.0


@dataclass(frozen=True)
class PoolLayout:
    """kt-kernel's pools: pool i has per_pool[i] threads pinned to NUMA node nodes[i]."""

    nodes: tuple[int, ...]
    per_pool: tuple[int, ...]

    @property
    def threads(self) -> int:
        return sum(self.per_pool)

    @property
    def pools(self) -> int:
        return len(self.nodes)

    @classmethod
    def split(cls, threads: int, nodes: Sequence[int]) -> PoolLayout:
        """kt-kernel's split of --kt-cpuinfer: threads // pools, +1 for the first remainder."""
        pools = len(nodes)
        per_pool = tuple(threads // pools + (1 if i < threads % pools else 0) for i in range(pools))
        return cls(tuple(nodes), per_pool)

    def describe(self) -> str:
        return " + ".join(f"{t}@node{n}" for n, t in zip(self.nodes, self.per_pool, strict=True))


@dataclass(frozen=True)
class Candidate:
    layout: PoolLayout
    labels: tuple[str, ...]
    note: str = ""


def candidates(plan: PoolLayout, host: HostCpus) -> list[Candidate]:
    """Pool layouts to measure: the plan, a sweep around it, the tutorial's and upstream's."""
    cores = host.cores_by_node
    found: dict[PoolLayout, list[str]] = {}
    notes: dict[PoolLayout, str] = {}

    def add(layout: PoolLayout, label: str, note: str = "") -> None:
        found.setdefault(layout, [])
        if label not in found[layout]:
            found[layout].append(label)
        if note:
            notes[layout] = note

    add(plan, "plan")
    limit = min(cores.get(node, 0) for node in plan.nodes) or max(plan.per_pool)
    centre = max(plan.per_pool)
    per_pool_counts = set(range(centre - SWEEP_RADIUS, centre + SWEEP_RADIUS + 1))
    per_pool_counts |= {math.ceil(limit / 2), math.ceil(3 * limit / 4), limit}
    for count in sorted(c for c in per_pool_counts if 1 <= c <= limit):
        add(PoolLayout(plan.nodes, (count,) * plan.pools), "sweep")

    def missing_nodes(nodes: Sequence[int]) -> str:
        absent = [n for n in nodes if n not in cores]
        if not absent:
            return ""
        return (
            f"node(s) {','.join(map(str, absent))} have no allowed cores here; kt-kernel "
            "warns and runs those pools where it can"
        )

    default_nodes = tuple(range(TUTORIAL_POOLS))
    tutorial_threads = max(1, round(TUTORIAL_THREADS / TUTORIAL_CORES * host.physical_cores))
    add(
        PoolLayout.split(tutorial_threads, default_nodes),
        f"tutorial ({TUTORIAL_THREADS} of {TUTORIAL_CORES} cores, {TUTORIAL_POOLS} pools, scaled)",
        missing_nodes(default_nodes),
    )
    upstream_nodes = tuple(range(UPSTREAM_POOLS))
    upstream_threads = max(1, int(UPSTREAM_THREAD_FRACTION * host.logical_cpus))
    add(
        PoolLayout.split(upstream_threads, upstream_nodes),
        f"upstream ({UPSTREAM_THREAD_FRACTION} x {host.logical_cpus} logical CPUs, "
        f"{UPSTREAM_POOLS} pools)",
        missing_nodes(upstream_nodes),
    )
    ordered = sorted(found, key=lambda lay: (lay.pools, lay.nodes, lay.threads, lay.per_pool))
    return [Candidate(lay, tuple(found[lay]), notes.get(lay, "")) for lay in ordered]


# -- kt-kernel runs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sizing:
    """How many synthetic experts each run loads: a working set far above the LLC."""

    experts: int
    layers: int
    bytes_per_expert: int
    target_bytes: int

    @property
    def loaded_bytes(self) -> int:
        return self.experts * self.layers * self.bytes_per_expert


def size_working_set(
    shape: ExpertShape, method: str, host: HostCpus, target_bytes: int | None = None
) -> Sizing:
    expert = bytes_per_expert(method, shape.hidden, shape.intermediate)
    target = target_bytes or max(WORKING_SET_FLOOR, WORKING_SET_LLC_MULTIPLE * host.llc_bytes)
    experts = min(shape.experts, max(2 * shape.top_k, math.ceil(target / expert)))
    layers = max(1, math.ceil(target / (experts * expert)))
    sizing = Sizing(experts, layers, expert, target)
    # kt-kernel stages one layer while loading it: the peak is the working set plus a layer.
    peak = sizing.loaded_bytes + experts * expert
    if peak > MEMORY_SHARE * host.mem_available_bytes and target_bytes is None:
        raise BenchError(
            f"the bench needs {peak / GIB:.1f} GiB for {layers} x {experts} experts of "
            f"{expert / MIB:.1f} MiB, more than {MEMORY_SHARE:.0%} of the "
            f"{host.mem_available_bytes / GIB:.1f} GiB available; free memory first"
        )
    return sizing


def worker_env(environ: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker: ours, with this package importable, plus `extra`."""
    env = dict(environ)
    package_parent = str(Path(__file__).resolve().parent.parent)
    paths = [package_parent, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.update(extra)
    return env


def run_worker(
    spec: RunSpec,
    env: Mapping[str, str],
    timeout: float,
    python: Sequence[str] = (sys.executable,),
) -> dict[str, Any]:
    """One worker process; its JSON, or an error entry saying how it ended.

    `python` is the command that runs Python (with the launcher importable): this
    interpreter by default, or e.g. `docker run ... IMAGE python` for a run in the image.
    """
    argv = [*python, "-m", "kthybrid_serve.cpubench.worker", json.dumps(spec.to_json())]
    try:
        done = subprocess.run(
            argv, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"no result within {timeout:.0f} s (killed)"}
    last = done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else []
    if last:
        try:
            result: dict[str, Any] = json.loads(last[0])
            return result
        except json.JSONDecodeError:
            pass
    tail = " | ".join(line for line in done.stderr.strip().splitlines()[-3:])
    how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
    return {"ok": False, "error": f"worker ended with {how} and no result; stderr: {tail}"}


@dataclass
class BenchOptions:
    seconds: float = 1.5
    working_set_bytes: int | None = None
    bandwidth_repeats: int = 5
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    progress: Callable[[str], None] | None = None


def _run_candidate(
    candidate: Candidate,
    shape: ExpertShape,
    method: str,
    sizing: Sizing,
    options: BenchOptions,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """One pool layout measured in a worker: the run's entry; kt-kernel's facts go to `meta`."""
    say = options.progress or (lambda _line: None)
    env = worker_env(options.environ, {})
    timeout = WORKER_BASE_TIMEOUT + WORKER_TIMEOUT_PER_GIB * sizing.loaded_bytes / GIB
    layout = candidate.layout
    entry: dict[str, Any] = {
        "threads": layout.threads,
        "pools": layout.pools,
        "threads_per_pool": list(layout.per_pool),
        "numa_nodes": list(layout.nodes),
        "labels": list(candidate.labels),
        "note": candidate.note,
        "gbps": None,
    }
    if min(layout.per_pool) < 1:
        entry["error"] = "not run: a pool would get 0 threads (kt-kernel's split)"
        return entry
    say(f"kt-kernel {method}: {layout.describe()} ...")
    spec = RunSpec(
        method=method,
        hidden=shape.hidden,
        intermediate=shape.intermediate,
        top_k=shape.top_k,
        experts=sizing.experts,
        layers=sizing.layers,
        pools=tuple(zip(layout.nodes, layout.per_pool, strict=True)),
        seconds=options.seconds,
    )
    result = run_worker(spec, env, timeout)
    if result.get("ok"):
        entry.update(
            gbps=result["gbps"],
            gbps_segments=result["gbps_segments"],
            tokens_per_second=result["tokens_per_second"],
            load_seconds=result["load_seconds"],
        )
        for key in ("cpu_variant", "moe_class", "kt_kernel_version", "glibc_tunables"):
            meta.setdefault(key, result.get(key))
    else:
        entry["error"] = str(result.get("error"))
    return entry


def run_bench(
    shape: ExpertShape,
    method: str,
    plan: PoolLayout,
    host: HostCpus,
    options: BenchOptions | None = None,
) -> dict[str, Any]:
    """Measure everything; the result is the JSON `kthybrid-serve bench --json` prints."""
    options = options or BenchOptions()
    if method not in METHODS:
        raise BenchError(f"the bench measures {', '.join(METHODS)}; the plan's method is {method}")
    say = options.progress or (lambda _line: None)
    started = time.perf_counter()
    sizing = size_working_set(shape, method, host, options.working_set_bytes)
    bandwidth_buffer = max(WORKING_SET_FLOOR, WORKING_SET_LLC_MULTIPLE * host.llc_bytes)
    say(f"read bandwidth over {bandwidth_buffer / GIB:.1f} GiB per node ...")
    total, per_node = read_bandwidth(host.cpus_by_node, bandwidth_buffer, options.bandwidth_repeats)
    runs: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    for candidate in candidates(plan, host):
        runs.append(_run_candidate(candidate, shape, method, sizing, options, meta))
    measured = [r for r in runs if r["gbps"] is not None]
    if not measured:
        first = next((r["error"] for r in runs if r.get("error")), "no run was made")
        raise BenchError(f"kt-kernel could not be measured: {first}")
    best = max(measured, key=lambda r: (r["gbps"], -r["threads"]))
    plan_run = next(r for r in runs if "plan" in r["labels"])
    plan_gbps = plan_run["gbps"]
    return {
        "method": method,
        "cpu_variant": meta.get("cpu_variant"),
        "moe_class": meta.get("moe_class"),
        "kt_kernel_version": meta.get("kt_kernel_version"),
        "glibc_tunables": meta.get("glibc_tunables"),
        "shape": shape.to_json(),
        "bytes_per_expert": sizing.bytes_per_expert,
        "experts_loaded_per_layer": sizing.experts,
        "layers_loaded": sizing.layers,
        "working_set_bytes": sizing.loaded_bytes,
        "llc_bytes": host.llc_bytes,
        "cpu_model": host.cpu_model,
        "physical_cores_by_node": {str(k): v for k, v in host.cores_by_node.items()},
        "logical_cpus": host.logical_cpus,
        "bandwidth_gbps": total.gbps,
        "bandwidth": total.to_json(),
        "bandwidth_per_node": [figure.to_json() for figure in per_node],
        "runs": runs,
        "plan_threads": plan.threads,
        "plan_pools": plan.pools,
        "plan_threads_per_pool": list(plan.per_pool),
        "plan_numa_nodes": list(plan.nodes),
        "plan_gbps": plan_gbps,
        "plan_error": plan_run.get("error"),
        "best_threads": best["threads"],
        "best_pools": best["pools"],
        "best_threads_per_pool": best["threads_per_pool"],
        "best_numa_nodes": best["numa_nodes"],
        "best_gbps": best["gbps"],
        "plan_vs_best": round(plan_gbps / best["gbps"], 3) if plan_gbps is not None else None,
        "best_vs_bandwidth": round(best["gbps"] / total.gbps, 3),
        "seconds": round(time.perf_counter() - started, 1),
    }
