"""`kthybrid-serve bench`: kt-kernel's CPU experts against the host's read bandwidth.

Decode speed of the hybrid server is bound by how fast the host streams routed-expert
weights: each token reads its top-k experts in every MoE layer the CPU serves. This module
measures, in one run:

- the host's read bandwidth: one thread per allowed physical core reading (memchr for a
  byte that is not there, glibc's vectorised scan) a buffer much larger than the last-level
  cache that those threads first touched, per NUMA node and all nodes at once;
- kt-kernel's single-token decode MoE at the model's expert shapes with the method the plan
  picks, in a fresh process per pool layout (kthybrid_serve.ktworker): the plan's layout, a
  sweep of threads per pool around it, the tutorial's hand-tuned values scaled to this host,
  and upstream's defaults (`kt run`: 0.8 x logical CPUs; sglang-kt: 2 pools).

Figures are GB/s of expert weights streamed (tokens x MoE layers x top-k x bytes per expert
in the kernel's format, over wall time), so they compare directly with the read bandwidth.
kt-kernel and its variant matter only inside the worker; this module imports neither.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kthybrid_serve.errors import BenchError, HostReadError
from kthybrid_serve.host import HostFacts
from kthybrid_serve.hostfs import HostTree
from kthybrid_serve.ktworker import METHODS, RunSpec, bytes_per_expert
from kthybrid_serve.model import ModelFacts
from kthybrid_serve.units import GIB, MIB, parse_size

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
class ExpertShape:
    """The routed experts of one model: what a decode step reads."""

    model: str
    hidden: int
    intermediate: int
    top_k: int
    experts: int  # routed experts per MoE layer
    moe_layers: int

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hidden": self.hidden,
            "intermediate": self.intermediate,
            "top_k": self.top_k,
            "experts": self.experts,
            "moe_layers": self.moe_layers,
        }


def expert_shape(model: ModelFacts) -> ExpertShape:
    """The routed experts' shape as the model's config and headers give it."""
    return ExpertShape(
        model=model.served_name,
        hidden=model.hidden_size,
        intermediate=model.moe_intermediate_size,
        top_k=model.experts_per_token,
        experts=model.routed_experts,
        moe_layers=model.moe_layers,
    )


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


@dataclass(frozen=True)
class HostCpus:
    """What the bench needs of the host: allowed CPUs by node and core, memory, cache."""

    cpus_by_node: Mapping[int, tuple[int, ...]]  # one allowed logical CPU per physical core
    logical_cpus: int  # every online CPU, as upstream `kt run` counts them
    llc_bytes: int
    mem_available_bytes: int
    cpu_model: str = "unknown"

    @property
    def cores_by_node(self) -> dict[int, int]:
        return {node: len(cpus) for node, cpus in self.cpus_by_node.items()}

    @property
    def physical_cores(self) -> int:
        return sum(self.cores_by_node.values())


def llc_bytes(root: str, cpus: Sequence[int]) -> int:
    """Total size of the distinct last-level caches the given CPUs use (sysfs cache info)."""
    tree = HostTree(root)
    caches: dict[str, int] = {}
    best_level = 0
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/cache"
        for name, _ in tree.entries(base, r"index([0-9]+)"):
            level = tree.read_int(f"{base}/{name}/level", 1, 9)
            kind = (tree.read(f"{base}/{name}/type") or "").strip()
            size = (tree.read(f"{base}/{name}/size") or "").strip()
            shared = (tree.read(f"{base}/{name}/shared_cpu_list") or "").strip()
            if level is None or not size or kind == "Instruction" or level < best_level:
                continue
            if level > best_level:
                caches.clear()
                best_level = level
            try:
                caches[shared or str(cpu)] = parse_size(size)
            except ValueError:
                raise HostReadError(
                    f"{tree.path(base)}/{name}/size holds {size[:40]!r}, not a cache size"
                ) from None
    if not caches:
        raise BenchError(
            f"cannot read the CPU caches below {root.rstrip('/')}/sys/devices/system/cpu; the "
            "read-bandwidth buffer and the working set are sized against the last-level cache"
        )
    return sum(caches.values())


def host_cpus(host: HostFacts) -> HostCpus:
    """The bench's view of the host: one allowed logical CPU per physical core, by node."""
    chosen: dict[int, dict[tuple[int, int], int]] = {}
    for cpu in sorted(host.cpus, key=lambda c: c.cpu):
        if cpu.cpu in host.allowed_cpus:
            chosen.setdefault(cpu.node, {}).setdefault(cpu.physical_core, cpu.cpu)
    cpus_by_node = {
        node: tuple(sorted(by_core.values())) for node, by_core in sorted(chosen.items())
    }
    available = host.memory_available_bytes()
    if host.cgroup.memory_limit is not None:
        available = min(available, host.cgroup.memory_limit)
    return HostCpus(
        cpus_by_node=cpus_by_node,
        logical_cpus=len(host.cpus),
        llc_bytes=llc_bytes(host.root, sorted(host.allowed_cpus)),
        mem_available_bytes=available,
        cpu_model=host.cpu_model,
    )


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


# -- read bandwidth -------------------------------------------------------------------

_PROT_READ, _PROT_WRITE = 0x1, 0x2
_MAP_PRIVATE, _MAP_ANONYMOUS = 0x02, 0x20


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long,
    ]  # fmt: skip
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.memchr.restype = ctypes.c_void_p
    libc.memchr.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    libc.memset.restype = ctypes.c_void_p
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    return libc


@dataclass(frozen=True)
class BandwidthFigure:
    nodes: tuple[int, ...]
    threads: int
    bytes: int
    gbps: float
    gbps_repeats: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": list(self.nodes),
            "threads": self.threads,
            "buffer_bytes": self.bytes,
            "gbps": self.gbps,
            "gbps_repeats": list(self.gbps_repeats),
        }


def _read_bandwidth(
    libc: Any, cpus_by_node: Mapping[int, Sequence[int]], bytes_per_node: int, repeats: int
) -> BandwidthFigure:
    """Read GB/s with one pinned thread per CPU given, each over its share of its node's buffer."""
    jobs: list[tuple[int, int, int]] = []  # (cpu, address, length)
    maps: list[tuple[int, int]] = []
    try:
        for cpus in cpus_by_node.values():
            address = libc.mmap(
                None, bytes_per_node, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0
            )
            if address in (None, ctypes.c_void_p(-1).value):
                raise BenchError(
                    f"cannot map {bytes_per_node / GIB:.1f} GiB for the read-bandwidth buffer: "
                    f"{os.strerror(ctypes.get_errno())}; free memory or lower --working-set"
                )
            maps.append((address, bytes_per_node))
            chunk = (bytes_per_node // len(cpus)) // 4096 * 4096
            jobs += [(cpu, address + i * chunk, chunk) for i, cpu in enumerate(cpus)]
        barrier = threading.Barrier(len(jobs) + 1)
        passes = [1]
        starts = [0.0] * len(jobs)
        ends = [0.0] * len(jobs)
        stop = [False]
        failures: list[str] = []

        def reader(index: int, cpu: int, address: int, length: int) -> None:
            try:
                os.sched_setaffinity(0, {cpu})  # this thread only
                libc.memset(address, 1, length)  # first touch: the pages land on cpu's node
            except OSError as error:
                failures.append(f"CPU {cpu}: {error}")
            barrier.wait()
            while True:
                barrier.wait()
                if stop[0]:
                    return
                starts[index] = time.perf_counter()
                for _ in range(passes[0]):
                    if libc.memchr(address, 0, length) is not None:
                        failures.append("read-bandwidth buffer changed under the readers")
                ends[index] = time.perf_counter()
                barrier.wait()

        threads = [
            threading.Thread(target=reader, args=(i, *job), daemon=True)
            for i, job in enumerate(jobs)
        ]
        for thread in threads:
            thread.start()
        barrier.wait()  # buffers filled

        def one_round() -> float:
            barrier.wait()  # readers start; each times its own reads
            barrier.wait()  # readers done
            return max(ends) - min(starts)

        first = one_round()
        passes[0] = min(1000, max(1, math.ceil(0.2 / max(first, 1e-6))))
        rates = []
        for _ in range(repeats):
            seconds = one_round()
            rates.append(passes[0] * sum(j[2] for j in jobs) / seconds / 1e9)
        stop[0] = True
        barrier.wait()
        for thread in threads:
            thread.join()
        if failures:
            raise BenchError(f"read-bandwidth measurement failed: {failures[0]}")
    finally:
        for address, length in maps:
            libc.munmap(address, length)
    rates.sort()
    return BandwidthFigure(
        nodes=tuple(cpus_by_node),
        threads=len(jobs),
        bytes=bytes_per_node * len(cpus_by_node),
        gbps=round(rates[len(rates) // 2], 2),
        gbps_repeats=tuple(round(r, 2) for r in rates),
    )


def read_bandwidth(
    cpus_by_node: Mapping[int, Sequence[int]], bytes_per_node: int, repeats: int = 5
) -> tuple[BandwidthFigure, tuple[BandwidthFigure, ...]]:
    """(all nodes at once, each node alone); on one node the two are the same measurement."""
    libc = _libc()
    per_node = tuple(
        _read_bandwidth(libc, {node: cpus}, bytes_per_node, repeats)
        for node, cpus in cpus_by_node.items()
    )
    if len(per_node) == 1:
        return per_node[0], per_node
    return _read_bandwidth(libc, cpus_by_node, bytes_per_node, repeats), per_node


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
    argv = [*python, "-m", "kthybrid_serve.ktworker", json.dumps(spec.to_json())]
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
    env = worker_env(options.environ, {})
    timeout = WORKER_BASE_TIMEOUT + WORKER_TIMEOUT_PER_GIB * sizing.loaded_bytes / GIB
    runs: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    for candidate in candidates(plan, host):
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
            runs.append(entry)
            continue
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
        runs.append(entry)
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


def decode_ceiling(
    gbps: float, shape: ExpertShape, method: str, gpu_experts_per_layer: float = 0.0
) -> float:
    """Tokens/s the CPU side allows: bytes of active experts per token on the CPU / GB/s.

    With routing spread evenly, a token's top-k experts fall on the CPU in proportion to the
    experts the CPU holds; the GPU's share costs the CPU nothing.
    """
    cpu_share = max(0.0, 1.0 - gpu_experts_per_layer / shape.experts) if shape.experts else 0.0
    per_token = (
        shape.moe_layers
        * shape.top_k
        * cpu_share
        * bytes_per_expert(method, shape.hidden, shape.intermediate)
    )
    return math.inf if per_token == 0 else gbps * 1e9 / per_token


def render_table(result: Mapping[str, Any]) -> str:
    """The human-readable report of one bench result."""
    shape = result["shape"]
    bandwidth = result["bandwidth_gbps"]
    lines = [
        f"kt-kernel {result['method']} decode ({result['moe_class']}, CPU variant "
        f"{result['cpu_variant']}), {shape['model']} experts {shape['hidden']}x"
        f"{shape['intermediate']}, top-{shape['top_k']}",
        f"working set {result['working_set_bytes'] / GIB:.1f} GiB ({result['layers_loaded']} "
        f"layer(s) x {result['experts_loaded_per_layer']} experts x "
        f"{result['bytes_per_expert'] / MIB:.1f} MiB); last-level cache "
        f"{result['llc_bytes'] / MIB:.0f} MiB",
    ]
    for figure in result["bandwidth_per_node"]:
        nodes = ",".join(map(str, figure["nodes"]))
        lines.append(
            f"read bandwidth node {nodes}: {figure['gbps']:.1f} GB/s, {figure['threads']} threads"
        )
    if len(result["bandwidth_per_node"]) > 1:
        lines.append(f"read bandwidth, all nodes at once: {bandwidth:.1f} GB/s")
    lines.append("")
    lines.append(f"{'threads':>7}  {'pools':>5}  {'per pool':<14} {'GB/s':>7}  {'of read':>7}  run")
    for run in result["runs"]:
        per_pool = " + ".join(
            f"{t}@{n}" for t, n in zip(run["threads_per_pool"], run["numa_nodes"], strict=True)
        )
        if run["gbps"] is None:
            figure, share = "-", "-"
        else:
            figure, share = f"{run['gbps']:.1f}", f"{run['gbps'] / bandwidth:.0%}"
        what = ", ".join(run["labels"])
        if run.get("error"):
            what += f" ({run['error']})"
        elif run.get("note"):
            what += f" ({run['note']})"
        counts = f"{run['threads']:>7}  {run['pools']:>5}"
        lines.append(f"{counts}  {per_pool:<14} {figure:>7}  {share:>7}  {what}")
    lines.append("")
    if result["plan_gbps"] is None:
        lines.append(
            f"plan ({result['plan_threads']} threads): not measured ({result['plan_error']})"
        )
    else:
        lines.append(
            f"plan: {result['plan_threads']} threads in {result['plan_pools']} pool(s), "
            f"{result['plan_gbps']:.1f} GB/s = {result['plan_vs_best']:.2f} of the best"
        )
    lines.append(
        f"best: {result['best_threads']} threads in {result['best_pools']} pool(s), "
        f"{result['best_gbps']:.1f} GB/s = {result['best_vs_bandwidth']:.2f} of the read bandwidth"
    )
    return "\n".join(lines)
