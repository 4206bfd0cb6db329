"""Render plans and doctor results for people (tables) and machines (JSON)."""

from __future__ import annotations

import shlex
from typing import Any

from kthybrid_serve.host.host import HostFacts, format_cpulist
from kthybrid_serve.model.model import ModelFacts
from kthybrid_serve.plan.memory import helm_values
from kthybrid_serve.plan.plan import Plan
from kthybrid_serve.plan.replicas import ReplicaSet
from kthybrid_serve.units import gib
from kthybrid_serve.untrusted import printable
from kthybrid_serve.validate import Check, memory_picture


def describe_host(host: HostFacts) -> list[str]:
    cores = host.physical_cores_by_node()
    lines = [
        f"cpu:    {host.cpu_model}; ISA: {' '.join(sorted(host.isa_flags)) or 'none found'}",
        f"numa:   {len(host.nodes)} node(s); allowed physical cores per node: "
        + ", ".join(f"{n}={c}" for n, c in cores.items())
        + f"; allowed CPUs {format_cpulist(host.allowed_cpus)}"
        + (" (SMT on: hyperthreads not counted)" if host.smt_active else ""),
        f"memory: {memory_picture(host)}; cgroup v{host.cgroup_version or '-'}"
        + (f", CPU quota {host.cgroup.cpu_quota.cpus:g} CPUs" if host.cgroup.cpu_quota else "")
        + f"; /dev/shm {gib(host.shm_bytes) if host.shm_bytes is not None else 'missing'}",
    ]
    for gpu in host.gpus:
        numa = f", NUMA node {gpu.numa_node}" if gpu.numa_node is not None else ""
        driver = f", driver {gpu.driver_version}" if gpu.driver_version else ""
        lines.append(
            f"gpu {gpu.index}:  {gpu.name}, {gib(gpu.memory_bytes)}, cc {gpu.cc_text}"
            f"{driver}{numa} (via {gpu.source})"
        )
    return lines


def describe_model(model: ModelFacts) -> str:
    return (
        f"model:  {model.path} ({model.architecture}, {model.num_layers} layers, "
        f"{model.moe_layers} MoE x {model.routed_experts} experts, top-{model.experts_per_token}; "
        f"routed {gib(model.routed_bytes)} {model.routed_format}, other {gib(model.other_bytes)}, "
        f"{model.shard_count} shards)"
    )


def render_plan(plan: Plan, host: HostFacts, model: ModelFacts) -> str:
    out = ["kthybrid-serve plan", *describe_host(host), describe_model(model), ""]
    width = max(len(f"{i.name} {i.value}") for i in plan.items) + 2
    source_width = max(len(i.source) for i in plan.items) + 2
    out.append(f"{'VALUE':<{width}}{'SOURCE':<{source_width}}REASON")
    for item in plan.items:
        out.append(
            f"{item.name + ' ' + item.value:<{width}}{item.source:<{source_width}}{item.reason}"
        )
    out += ["", "GPU memory budget (per GPU):"]
    for line in plan.gpu_budget:
        out.append(f"  {line.label:<36}{line.amount / 1024**3:>+9.1f} GiB  {line.note}")
    out.append(
        "  => GPU-only: every routed expert on the GPUs"
        if plan.gpu_only
        else f"  => --kt-num-gpu-experts {plan.kt_num_gpu_experts} "
        f"(at most {plan.max_gpu_experts} fit)"
    )
    if plan.gpu_only:
        out += ["", "host memory: GPU-only plan, no CPU experts in host memory"]
    else:
        out += [
            "",
            f"host memory: CPU experts {gib(plan.cpu_expert_bytes)}, need "
            f"{gib(plan.host_memory_needed)} with overhead; {memory_picture(host)}",
        ]
    for note in plan.notes:
        out.append(f"note: {note}")
    out += ["", "environment:"]
    out += [f"  {k}={v}" for k, v in sorted(plan.env.items())]
    out += [f"  unset {k}" for k in plan.env_unset]
    out += ["", "command:", "  " + shlex.join(plan.argv)]
    return _lines(out)


def _lines(lines: list[str]) -> str:
    """One output line per entry: a control character from a host tree, a model, a record or
    the environment is shown escaped, never sent to the terminal or allowed to split a line."""
    return "\n".join(printable(line, None) for line in lines)


def _plan_fields(plan: Plan) -> dict[str, Any]:
    return {
        "kt_cpuinfer": plan.kt_cpuinfer,
        "kt_threadpool_count": plan.kt_threadpool_count,
        "kt_numa_nodes": list(plan.kt_numa_nodes),
        "threads_per_pool": list(plan.threads_per_pool),
        "kt_num_gpu_experts": None if plan.gpu_only else plan.kt_num_gpu_experts,
        "max_gpu_experts": plan.max_gpu_experts,
        "kt_method": plan.kt_method,
        "kt_weight_path": plan.kt_weight_path,
        "gpu_only": plan.gpu_only,
        "tp_size": plan.tp_size,
        "gpus_used": plan.gpus_used,
        "cpu_expert_bytes": plan.cpu_expert_bytes,
        "host_memory_needed_bytes": plan.host_memory_needed,
        "target": plan.target,
        "env": dict(plan.env),
        "env_unset": list(plan.env_unset),
        "argv": list(plan.argv),
        "items": [
            {"name": i.name, "value": i.value, "source": i.source, "reason": i.reason}
            for i in plan.items
        ],
        "gpu_budget": [
            {"label": b.label, "bytes": b.amount, "note": b.note} for b in plan.gpu_budget
        ],
        "notes": list(plan.notes),
    }


def plan_json(plan: Plan, host: HostFacts, model: ModelFacts) -> dict[str, Any]:
    data = _plan_fields(plan)
    data["host"] = {
        "numa_nodes": [n.node for n in host.nodes],
        "physical_cores_by_node": {str(k): v for k, v in host.physical_cores_by_node().items()},
        "allowed_cpus": format_cpulist(host.allowed_cpus),
        "smt": host.smt_active,
        "mem_total_bytes": host.mem_total_bytes,
        "mem_available_bytes": host.memory_available_bytes(),
        "hugepages_reserved_bytes": host.hugepages_total_bytes(),
        "memory_nodes": list(host.memory_nodes()),
        "isolated_cpus": format_cpulist(host.isolated_cpus),
        "cgroup_version": host.cgroup_version,
        "cgroup_memory_limit": host.cgroup_memory_limit,
        "cgroup_cpu_quota_cpus": host.cgroup.cpu_quota.cpus if host.cgroup.cpu_quota else None,
        "shm_bytes": host.shm_bytes,
        "isa": sorted(host.isa_flags),
        "gpus": [
            {
                "index": g.index,
                "name": g.name,
                "memory_bytes": g.memory_bytes,
                "compute_capability": g.cc_text,
                "driver_version": g.driver_version,
                "numa_node": g.numa_node,
                "source": g.source,
            }
            for g in host.gpus
        ],
    }
    data["model"] = {
        "path": model.path,
        "architecture": model.architecture,
        "moe_layers": model.moe_layers,
        "routed_experts": model.routed_experts,
        "routed_bytes": model.routed_bytes,
        "other_bytes": model.other_bytes,
        "bytes_per_expert": model.bytes_per_expert,
        "revision": model.revision,
    }
    return data


def render_checks(checks: list[Check]) -> str:
    marks = {"ok": " ok ", "warn": "warn", "fail": "FAIL", "skip": "skip"}
    return _lines([f"[{marks[c.status]}] {c.name}: {c.message}" for c in checks])


def checks_json(checks: list[Check]) -> list[dict[str, Any]]:
    return [
        {
            "name": c.name,
            "status": c.status,
            "message": c.message,
            "exit_code": c.error.exit_code if c.error else 0,
        }
        for c in checks
    ]


def helm_values_yaml(plan: Plan) -> str:
    """The chart's `hostMemory` block for this plan (YAML a values file can take as is)."""
    lines = [
        "# kthybrid-serve plan --helm-values: the host memory this host and model need",
        "hostMemory:",
    ]
    values = helm_values(plan.cpu_expert_bytes, plan.kernel.overhead)
    lines += [f"  {key}: {value}" for key, value in values.items()]
    return "\n".join(lines)


def error_json(error_code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": error_code, "message": message}}


def _tokens(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} tokens/s"


def render_replicas(replicas: ReplicaSet, host: HostFacts, model: ModelFacts) -> str:
    """`plan --replicas N`: each replica's part of the host, its plan's figures, the totals."""
    count = len(replicas.plans)
    split = replicas.split
    out = [f"kthybrid-serve plan --replicas {count}", *describe_host(host), describe_model(model)]
    affinity = (
        "GPU NUMA affinity: known for every GPU (NVML or /sys/bus/pci/devices)"
        if split.affinity_known
        else "GPU NUMA affinity: UNKNOWN, GPUs assigned in index order (see the note)"
    )
    out += ["", f"replicas: {count}; {affinity}"]
    rows = [("REPLICA", "GPUS", "NODES", "CPUS", "PORT", "CPUINFER", "GPU EXPERTS", "HOST RAM",
             "CPU DECODE CEILING")]  # fmt: skip
    for rp in replicas.plans:
        r, plan = rp.replica, rp.plan
        rows.append((str(r.index), r.gpu_ids, ",".join(map(str, r.nodes)), r.cpuset,
                     str(r.port), str(plan.kt_cpuinfer or "-"),
                     "all" if plan.gpu_only else str(plan.kt_num_gpu_experts),
                     gib(plan.host_memory_needed), _tokens(rp.ceiling)))  # fmt: skip
    cpuinfer = sum(p.plan.kt_cpuinfer or 0 for p in replicas.plans)
    gpus = sum(len(p.replica.gpus) for p in replicas.plans)
    nodes = sum(len(p.replica.nodes) for p in replicas.plans)
    rows.append(("total", str(gpus), str(nodes), "", "", str(cpuinfer), "",
                 gib(replicas.host_memory_needed), _tokens(replicas.total_ceiling)))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(len(rows[0]))]
    out += ["".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]  # fmt: skip
    out.append(
        "the total CPU decode ceiling is the sum over replicas (each decodes its own requests); "
        f"one server on the whole host (--replicas 1): {_tokens(replicas.whole_host_ceiling)} "
        f"({replicas.whole_host_why})"
    )
    for rp in replicas.plans:
        out.append(f"replica {rp.replica.index} CPU decode ceiling: {rp.ceiling_why}")
    out += [
        "",
        f"host memory: {count} replica(s) x (CPU experts + overhead + runtime) = "
        f"{gib(replicas.host_memory_needed)} ({gib(replicas.cpu_expert_bytes)} of CPU experts); "
        f"{memory_picture(host)}",
    ]
    out += [f"note: {note}" for note in (*split.notes, *host.notes)]
    out += ["", "commands (or `kthybrid-serve serve --replicas N --replica-index I`):"]
    out += [f"  {rp.replica.index}: {shlex.join(rp.plan.argv)}" for rp in replicas.plans]
    out += ["", f"compose fleet .env lines: kthybrid-serve plan --replicas {count} --fleet-env"]
    return _lines(out)


def replicas_json(replicas: ReplicaSet, host: HostFacts, model: ModelFacts) -> dict[str, Any]:
    whole = plan_json(replicas.plans[0].plan, host, model)
    items = []
    for rp in replicas.plans:
        r = rp.replica
        items.append({
            "index": r.index,
            "gpus": [g.index for g in r.gpus],
            "gpu_numa_nodes": [g.numa_node for g in r.gpus],
            "numa_nodes": list(r.nodes),
            "cpuset": r.cpuset,
            "port": r.port,
            "cpu_decode_ceiling": rp.ceiling,
            "cpu_decode_ceiling_reason": rp.ceiling_why,
            "plan": _plan_fields(rp.plan),
        })  # fmt: skip
    return {
        "replicas": items,
        "gpu_affinity_known": replicas.split.affinity_known,
        "notes": list(replicas.split.notes),
        "total": {
            "gpus": sum(len(p.replica.gpus) for p in replicas.plans),
            "cpu_expert_bytes": replicas.cpu_expert_bytes,
            "host_memory_needed_bytes": replicas.host_memory_needed,
            "cpu_decode_ceiling": replicas.total_ceiling,
        },
        "whole_host_cpu_decode_ceiling": replicas.whole_host_ceiling,
        "whole_host_cpu_decode_ceiling_reason": replicas.whole_host_why,
        "fleet_env": [line for line in replicas.fleet_env() if not line.startswith("#")],
        "host": whole["host"],
        "model": whole["model"],
    }
