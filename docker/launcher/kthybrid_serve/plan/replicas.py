"""One host split into replicas: disjoint GPUs, NUMA nodes (their cores and memory) and ports.

Each replica is planned as a server of its own on the part of the host it gets: `make_plan`
on the host restricted to the replica's CPUs, memory nodes and GPUs. A replica is a whole
number of NUMA nodes (kt-kernel pins one thread pool per node), so a split finer than the
nodes is refused. The host-RAM check of all replicas counts each replica's plan: its CPU
experts and runtime, from plan/memory.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from kthybrid_serve.errors import CpuTopologyError, GpuCountError, LauncherError, UsageError
from kthybrid_serve.host.gpus import Gpu
from kthybrid_serve.host.host import HostFacts, format_cpulist
from kthybrid_serve.model.experts import decode_ceiling, expert_shape
from kthybrid_serve.model.model import ModelFacts
from kthybrid_serve.model.weights import CpuWeights
from kthybrid_serve.plan.items import PlanItem
from kthybrid_serve.plan.memory import container_limit_gib
from kthybrid_serve.plan.plan import Plan, make_plan
from kthybrid_serve.plan.records import lookup, tune_dir, tune_key
from kthybrid_serve.plan.runtime_needs import ImageFacts
from kthybrid_serve.plan.targets import TargetData
from kthybrid_serve.settings import Settings

MAX_PORT = 65535
MEASURED = "measured by `kthybrid-serve tune` on exactly these CPUs"


@dataclass(frozen=True)
class Replica:
    index: int
    gpus: tuple[Gpu, ...]
    nodes: tuple[int, ...]  # the NUMA nodes whose cores and memory it uses
    cpus: tuple[int, ...]  # the allowed logical CPUs of those nodes
    port: int

    @property
    def cpuset(self) -> str:
        return format_cpulist(self.cpus)

    @property
    def gpu_ids(self) -> str:
        return ",".join(str(g.index) for g in self.gpus)

    @property
    def device_ids(self) -> str:
        """For Docker's device_ids and CUDA_VISIBLE_DEVICES: NVML's UUIDs where every GPU has
        one (an index inside a container that sees some GPUs is not the host's), else indexes.
        """
        uuids = [g.uuid for g in self.gpus]
        return ",".join(u for u in uuids if u) if all(uuids) else self.gpu_ids


@dataclass(frozen=True)
class HostSplit:
    replicas: tuple[Replica, ...]
    affinity_known: bool  # every GPU's NUMA node came from NVML or the host tree
    notes: tuple[str, ...]


def check_request(settings: Settings) -> None:
    """Settings that cannot go with replicas; raises UsageError."""
    count, index = settings.replicas, settings.replica_index
    if index is not None and index >= count:
        raise UsageError(
            f"--replica-index {index} is not below --replicas {count}: replicas are numbered "
            f"0-{count - 1}"
        )
    if count == 1:
        return
    if settings.nnodes > 1:
        raise UsageError(
            f"--replicas {count} splits one host; it does not combine with --nnodes "
            f"{settings.nnodes} (one server over several hosts)"
        )
    if settings.kt_numa_nodes is not None:
        raise UsageError(
            f"--kt-numa-nodes names the nodes of one server; with --replicas {count} each "
            "replica gets its own nodes from the plan: unset it"
        )
    if settings.numa_policy == "interleave-all":
        raise UsageError(
            "KTHYBRID_NUMA_POLICY=interleave-all spreads every replica's experts over every "
            "node, but replicas keep to their own nodes: use interleave or local"
        )


def _assign_gpus(
    gpus: tuple[Gpu, ...], groups: list[tuple[int, ...]], per: int
) -> tuple[list[list[Gpu]], list[str]]:
    """GPUs per replica: those on its nodes first, then the rest in index order (said so)."""
    unknown = [g.index for g in gpus if g.numa_node is None]
    if unknown:
        note = (
            f"GPU NUMA affinity unknown for GPU(s) {','.join(map(str, unknown))} (neither NVML "
            "nor the host tree's /sys/bus/pci/devices/<address>/numa_node says): GPUs are given "
            "to replicas in index order, and a replica's GPU may sit on another socket"
        )
        return [list(gpus[i * per : (i + 1) * per]) for i in range(len(groups))], [note]
    assigned: list[list[Gpu]] = [[] for _ in groups]
    free = list(gpus)
    for slot, group in zip(assigned, groups, strict=True):
        for gpu in [g for g in free if g.numa_node in group][:per]:
            slot.append(gpu)
            free.remove(gpu)
    notes: list[str] = []
    for i, slot in enumerate(assigned):
        while len(slot) < per:
            gpu = free.pop(0)
            slot.append(gpu)
            notes.append(
                f"GPU {gpu.index} is on NUMA node {gpu.numa_node}, not on replica {i}'s node(s) "
                f"{','.join(map(str, groups[i]))}: too few GPUs near them; its transfers cross "
                "the socket link"
            )
    return [sorted(slot, key=lambda g: g.index) for slot in assigned], notes


def split_host(host: HostFacts, count: int, base_port: int) -> HostSplit:
    """Each replica's GPUs, nodes, CPUs and port; refuses (with the numbers) what cannot split."""
    cores = host.physical_cores_by_node()
    nodes = sorted(cores)
    if count > len(host.gpus):
        raise GpuCountError(
            f"--replicas {count} needs a GPU per replica but {len(host.gpus)} GPU(s) were found; "
            f"use --replicas {len(host.gpus)} or fewer, or expose more GPUs"
        )
    if count > len(nodes):
        raise CpuTopologyError(
            f"--replicas {count} needs a NUMA node per replica (disjoint cores and memory) but "
            f"this host allows CPU cores on {len(nodes)} node(s) ({','.join(map(str, nodes))}); "
            f"use --replicas {len(nodes)} or fewer"
        )
    if base_port + count - 1 > MAX_PORT:
        raise UsageError(
            f"--replicas {count} from --port {base_port} needs ports up to "
            f"{base_port + count - 1}, above {MAX_PORT}; lower --port"
        )
    per_node = len(nodes) // count
    groups = [tuple(nodes[i * per_node : (i + 1) * per_node]) for i in range(count)]
    per_gpu = len(host.gpus) // count
    assigned, notes = _assign_gpus(host.gpus, groups, per_gpu)
    idle_nodes = nodes[count * per_node :]
    if idle_nodes:
        notes.append(
            f"NUMA node(s) {','.join(map(str, idle_nodes))} left idle: {len(nodes)} nodes do not "
            f"split evenly into {count} replicas"
        )
    used = {g.index for slot in assigned for g in slot}
    idle_gpus = [g.index for g in host.gpus if g.index not in used]
    if idle_gpus:
        notes.append(
            f"GPU(s) {','.join(map(str, idle_gpus))} left idle: {len(host.gpus)} GPUs do not "
            f"split evenly into {count} replicas"
        )
    allowed = host.allowed_cpus
    replicas = tuple(
        Replica(
            index=i,
            gpus=tuple(assigned[i]),
            nodes=group,
            cpus=tuple(sorted(c.cpu for c in host.cpus if c.node in group and c.cpu in allowed)),
            port=base_port + i,
        )
        for i, group in enumerate(groups)
    )
    known = all(g.numa_node is not None for g in host.gpus)
    return HostSplit(replicas, known, tuple(notes))


def replica_host(host: HostFacts, replica: Replica) -> HostFacts:
    """The host as the replica sees it: its CPUs, its memory nodes, its GPUs."""
    mems = frozenset(replica.nodes)
    if host.cgroup.mems is not None:
        mems &= host.cgroup.mems
    return replace(
        host,
        allowed_cpus=frozenset(replica.cpus),
        gpus=replica.gpus,
        cgroup=replace(host.cgroup, mems=mems),
    )


@dataclass(frozen=True)
class ReplicaPlan:
    replica: Replica
    host: HostFacts  # the part of the host it gets
    plan: Plan
    ceiling: float | None  # CPU decode ceiling in tokens/s; None: unmeasured or no CPU experts
    ceiling_why: str


@dataclass(frozen=True)
class ReplicaSet:
    split: HostSplit
    plans: tuple[ReplicaPlan, ...]
    whole_host_ceiling: float | None  # one server on the whole host, for comparison
    whole_host_why: str

    @property
    def cpu_expert_bytes(self) -> int:
        return sum(p.plan.cpu_expert_bytes for p in self.plans)

    @property
    def host_memory_needed(self) -> int:
        return sum(p.plan.host_memory_needed for p in self.plans)

    @property
    def total_ceiling(self) -> float | None:
        values = [p.ceiling for p in self.plans]
        return None if any(v is None for v in values) else sum(v or 0.0 for v in values)

    def combined(self) -> Plan:
        """A plan carrying every replica's host memory: what the host checks count."""
        return replace(
            self.plans[0].plan,
            cpu_expert_bytes=self.cpu_expert_bytes,
            host_memory_needed=self.host_memory_needed,
            gpu_only=all(p.plan.gpu_only for p in self.plans),
        )

    def fleet_env(self) -> list[str]:
        """compose.fleet.yaml's FLEET_<i>_* lines for .env."""
        count = len(self.plans)
        lines = [
            f"# kthybrid-serve plan --replicas {count} --fleet-env: compose.fleet.yaml's bindings",
            f"# (builder/fleet.yaml's replicas must be {count}; GPUs as NVML UUIDs, else indexes)",
        ]
        for rp in self.plans:
            r = rp.replica
            nodes = rp.plan.kt_numa_nodes or r.nodes
            limit = container_limit_gib(rp.plan.cpu_expert_bytes, rp.plan.kernel.overhead)
            lines += [
                f"FLEET_{r.index}_CPUSET={r.cpuset}",
                f"FLEET_{r.index}_NUMA_NODES={','.join(map(str, nodes))}",
                f"FLEET_{r.index}_GPUS={r.device_ids}",
                f"FLEET_{r.index}_MEM_LIMIT={limit}g",
            ]
        return lines


def _ceiling(
    rp_plan: Plan, host: HostFacts, model: ModelFacts, environ: Mapping[str, str]
) -> tuple[float | None, str]:
    """The replica's CPU decode ceiling: its own tune record's, else the whole host's scaled."""
    if rp_plan.gpu_only or rp_plan.kt_method is None or rp_plan.kt_cpuinfer is None:
        return None, "GPU-only: the CPU sets no ceiling"
    if rp_plan.cpu_decode_ceiling is not None:
        ceiling = rp_plan.cpu_decode_ceiling
        return (None if math.isinf(ceiling) else ceiling), MEASURED
    shape = expert_shape(model)
    tuned = lookup(tune_dir(environ), tune_key(host, shape, rp_plan.kt_method))
    if tuned is None:
        return None, "not measured: run `kthybrid-serve tune` on this host"
    pools, threads = len(rp_plan.kt_numa_nodes), rp_plan.kt_cpuinfer
    scale = min(1.0, pools / tuned.pools, threads / tuned.threads)
    gbps = tuned.gbps * scale
    ceiling = decode_ceiling(gbps, shape, rp_plan.kt_method, rp_plan.kt_num_gpu_experts)
    why = (
        f"the whole host's {tuned.gbps:.1f} GB/s ({tuned.threads} threads on {tuned.pools} "
        f"node(s), `kthybrid-serve tune`) x {scale:.2f} (the lower of nodes {pools}/"
        f"{tuned.pools} and threads {threads}/{tuned.threads}) = {gbps:.1f} GB/s"
    )
    return (None if math.isinf(ceiling) else ceiling), why


def _replica_plan(replica: Replica, plan: Plan, settings: Settings, count: int) -> Plan:
    """The replica's own plan, confined: its CPUs (numactl) and its GPUs (CUDA)."""
    bind = f"--physcpubind={replica.cpuset}"
    argv = list(plan.argv)
    if argv[0] == "numactl":
        argv.insert(1, bind)
    else:
        argv[0:0] = ["numactl", bind]
    item = PlanItem(
        "replica", f"{replica.index} of {count}",
        f"GPU(s) {replica.gpu_ids} (CUDA_VISIBLE_DEVICES), NUMA node(s) "
        f"{','.join(map(str, replica.nodes))}, CPUs {replica.cpuset} (numactl {bind}), port "
        f"{replica.port}",
        settings.source("replicas"),
    )  # fmt: skip
    return replace(
        plan,
        items=(item, *plan.items),
        env={**plan.env, "CUDA_VISIBLE_DEVICES": replica.device_ids},
        argv=tuple(argv),
    )


def plan_replicas(
    host: HostFacts,
    model: ModelFacts,
    weights: CpuWeights,
    settings: Settings,
    data: TargetData,
    environ: Mapping[str, str],
    image: ImageFacts | None = None,
) -> ReplicaSet:
    """Split the host and plan each replica on its part; raises a LauncherError subclass."""
    check_request(settings)
    count = settings.replicas
    split = split_host(host, count, settings.port)
    plans = []
    for replica in split.replicas:
        rhost = replica_host(host, replica)
        own = replace(settings, port=replica.port)
        plan = make_plan(rhost, model, weights, own, data, environ, image)
        ceiling, why = _ceiling(plan, host, model, environ)
        plan = _replica_plan(replica, plan, settings, count)
        plans.append(ReplicaPlan(replica, rhost, plan, ceiling, why))
    if count == 1:
        return ReplicaSet(split, tuple(plans), plans[0].ceiling, plans[0].ceiling_why)
    try:
        one = make_plan(host, model, weights, settings, data, environ, image)
    except LauncherError as error:  # nothing to compare with
        return ReplicaSet(split, tuple(plans), None, f"no plan ({error.message})")
    whole, why = _ceiling(one, host, model, environ)
    return ReplicaSet(split, tuple(plans), whole, why)
