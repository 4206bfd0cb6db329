"""CPU expert threads and NUMA pools: how many, on which nodes, and which limit bound them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kthybrid_serve.errors import CpuTopologyError
from kthybrid_serve.host.host import HostFacts
from kthybrid_serve.plan.items import PlanItem

# One process per GPU (scheduler) plus these two: HTTP server/tokenizer, detokenizer.
PROCESSES_PER_NODE = 2


@dataclass(frozen=True)
class ThreadRequest:
    """What the threads are planned from: explicit arguments, never rewritten settings."""

    reserved_cores: int | None = None
    cpuinfer: int | None = None
    pools: int | None = None
    nodes: tuple[int, ...] | None = None
    required_pools: int | None = None  # converted AMX weights fix the pool count
    sources: tuple[tuple[str, str], ...] = ()  # (dest, source) of the values given

    def source(self, dest: str) -> str:
        return dict(self.sources).get(dest, "planned")


@dataclass(frozen=True)
class CpuBudget:
    cores: dict[int, int]  # allowed physical cores per node
    total: int
    reserved: int
    threads: int  # what the pools may use in total
    why: str  # how `threads` came about, naming the limit that bound it
    quota_cpus: int | None = None  # whole CPUs the cgroup's CPU quota grants


@dataclass(frozen=True)
class ThreadPlan:
    cpuinfer: int
    nodes: tuple[int, ...]
    per_pool: tuple[int, ...]
    items: tuple[PlanItem, ...]


def split_threads(cpuinfer: int, pools: int) -> tuple[int, ...]:
    """kt-kernel's split: pool i gets cpuinfer // pools, plus one for the first cpuinfer % pools."""
    return tuple(cpuinfer // pools + (1 if i < cpuinfer % pools else 0) for i in range(pools))


def cpu_budget(host: HostFacts, request: ThreadRequest, gpus_local: int) -> CpuBudget:
    """Physical cores left for the experts after reservations, capped by a CPU quota."""
    cores = host.physical_cores_by_node()
    total = sum(cores.values())
    if request.reserved_cores is not None:
        reserved, reserved_why = request.reserved_cores, "given"
    else:
        reserved = gpus_local + PROCESSES_PER_NODE
        reserved_why = (
            f"{gpus_local} GPU scheduler process(es) + {PROCESSES_PER_NODE} for the HTTP "
            "server/tokenizer and detokenizer"
        )
    smt = " (hyperthreads not counted)" if host.smt_active else ""
    threads = max(1, total - reserved)
    why = f"{total} allowed physical cores{smt} minus {reserved} reserved ({reserved_why})"
    quota = host.cgroup.cpu_quota
    if quota is not None and math.floor(quota.cpus) < total:
        by_quota = max(1, math.floor(quota.cpus) - reserved)
        if by_quota < threads:
            threads = by_quota
            why = (
                f"cgroup CPU quota {quota.quota_us}/{quota.period_us} us = {quota.cpus:g} CPUs "
                f"({quota.where}) minus {reserved} reserved ({reserved_why}); more threads "
                f"than the quota would be throttled"
            )
    if total <= reserved:
        why += "; too few cores to reserve any: the GPU feeders share cores"
    quota_cpus = max(1, math.floor(quota.cpus)) if quota is not None else None
    return CpuBudget(cores, total, reserved, threads, f"{why} = {threads}", quota_cpus)


def _per_pool(budget: CpuBudget, nodes: list[int]) -> int:
    # The slowest pool sets the pace of every MoE layer (each pool computes a slice of
    # every expert): equal pools, capped by the smallest node's physical cores.
    return min(min(budget.cores[n] for n in nodes), max(1, budget.threads // len(nodes)))


def _candidates(budget: CpuBudget, request: ThreadRequest) -> list[list[int]]:
    cores = budget.cores
    nodes, pools = request.nodes, request.pools
    if pools is None and request.required_pools is not None and nodes is None:
        pools = request.required_pools
    if nodes is not None:
        unknown = [n for n in nodes if n not in cores]
        if unknown:
            raise CpuTopologyError(
                f"--kt-numa-nodes {','.join(map(str, nodes))}: node(s) "
                f"{','.join(map(str, unknown))} have no allowed CPU cores; nodes with cores: "
                f"{','.join(map(str, cores))}"
            )
        if pools is not None and pools != len(nodes):
            raise CpuTopologyError(
                f"--kt-threadpool-count {pools} must equal the number of --kt-numa-nodes "
                f"({len(nodes)}); kt-kernel maps pool i to node i"
            )
        return [list(nodes)]
    by_size = sorted(cores, key=lambda n: (-cores[n], n))
    if pools is not None:
        if pools > len(cores):
            raise CpuTopologyError(
                f"--kt-threadpool-count {pools} but this host allows CPU cores on {len(cores)} "
                f"NUMA node(s); kt-kernel pins one pool per node, so use {len(cores)} or fewer "
                "(upstream's default of 2 crashes one-node hosts)"
            )
        return [sorted(by_size[:pools])]
    return [sorted(by_size[:k]) for k in range(1, len(by_size) + 1)]


def _cpuinfer_item(
    budget: CpuBudget, request: ThreadRequest, nodes: list[int], planned: int
) -> tuple[int, PlanItem]:
    if request.cpuinfer is None:
        why = budget.why
        if planned < budget.threads:
            limiting = min(nodes, key=lambda n: (budget.cores[n], n))
            why += (
                f"; equal pools of {planned // len(nodes)} (node {limiting} has "
                f"{budget.cores[limiting]} cores, the slowest pool sets the pace)"
            )
        return planned, PlanItem("--kt-cpuinfer", str(planned), why)
    for node, threads in zip(nodes, split_threads(request.cpuinfer, len(nodes)), strict=True):
        if threads > budget.cores[node]:
            raise CpuTopologyError(
                f"--kt-cpuinfer {request.cpuinfer} puts {threads} threads on NUMA node {node}, "
                f"which has {budget.cores[node]} allowed physical cores; hyperthreads make CPU "
                f"experts several times slower, use at most {budget.cores[node] * len(nodes)}"
            )
    quota = budget.quota_cpus
    if quota is not None and request.cpuinfer > quota:
        raise CpuTopologyError(
            f"--kt-cpuinfer {request.cpuinfer} is more than the cgroup's CPU quota of {quota} "
            "CPUs: the threads would be throttled; lower it or raise the pod's CPU limit"
        )
    return request.cpuinfer, PlanItem(
        "--kt-cpuinfer",
        str(request.cpuinfer),
        f"override; the plan would use {planned} ({budget.why})",
        request.source("kt_cpuinfer"),
    )


def _pool_items(
    budget: CpuBudget, request: ThreadRequest, nodes: list[int], per_pool: tuple[int, ...]
) -> list[PlanItem]:
    cores = budget.cores
    why = f"one pool per NUMA node used ({len(nodes)} of {len(cores)} with cores)"
    if request.pools is None:
        if request.required_pools is not None:
            why = f"the AMX weights were converted for {request.required_pools} NUMA node(s)"
        if len(cores) == 1:
            why += "; upstream's default of 2 crashes a one-node host"
        elif len(nodes) > 2:
            idle = ",".join(map(str, nodes[2:]))
            why += (
                f"; 2 pools (upstream's default, the tutorial's command) would pin to nodes "
                f"{nodes[0]},{nodes[1]} only and leave the cores of node(s) {idle} idle"
            )
    placement = ", ".join(f"node {n}: {t}/{cores[n]}" for n, t in zip(nodes, per_pool, strict=True))
    return [
        PlanItem("--kt-threadpool-count", str(len(nodes)), why,
                 request.source("kt_threadpool_count")),
        PlanItem("--kt-numa-nodes", " ".join(map(str, nodes)),
                 f"pool i pinned to node i; threads per pool {placement}",
                 request.source("kt_numa_nodes")),
    ]  # fmt: skip


def plan_threads(host: HostFacts, request: ThreadRequest, gpus_local: int) -> ThreadPlan:
    budget = cpu_budget(host, request, gpus_local)
    candidates = _candidates(budget, request)
    # Most threads wins; on a tie, more nodes (more memory bandwidth for the same threads).
    nodes = max(candidates, key=lambda c: (_per_pool(budget, c) * len(c), len(c)))
    planned = _per_pool(budget, nodes) * len(nodes)
    cpuinfer, cpuinfer_item = _cpuinfer_item(budget, request, nodes, planned)
    per_pool = split_threads(cpuinfer, len(nodes))
    items = (cpuinfer_item, *_pool_items(budget, request, nodes, per_pool))
    return ThreadPlan(cpuinfer, tuple(nodes), per_pool, items)
