"""The tuned thread count, read back: records `kthybrid-serve tune` kept in the cache volume.

A record holds the best pool layout the bench measured for one host (a fingerprint of its
CPUs, NUMA nodes and limits), one expert shape and one method. `plan` and `serve` use it
only when all three match what they see; otherwise the rule applies. Records live in
`$XDG_CACHE_HOME/kthybrid/tune/` (the image sets XDG_CACHE_HOME=/cache, the cache volume).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kthybrid_serve.errors import TuneError
from kthybrid_serve.host.host import HostFacts
from kthybrid_serve.model.experts import ExpertShape, bytes_per_expert, decode_ceiling
from kthybrid_serve.plan.items import PlanItem
from kthybrid_serve.plan.threads import ThreadPlan, ThreadRequest
from kthybrid_serve.units import GIB, MIB

RECORD_FORMAT = 1


def tune_dir(environ: Mapping[str, str]) -> Path:
    """Where records live: $XDG_CACHE_HOME/kthybrid/tune, else ~/.cache/kthybrid/tune."""
    cache = environ.get("XDG_CACHE_HOME") or str(
        Path(environ.get("HOME", "~")).expanduser() / ".cache"
    )
    return Path(cache) / "kthybrid" / "tune"


def _cpulist(cpus: set[int]) -> str:
    """The kernel's list format, e.g. "0-13,16"."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def host_fingerprint(host: HostFacts) -> dict[str, Any]:
    """What makes a measured thread count valid: CPU, ISA, cores per node, allowed CPUs, limits.

    Memory is rounded to whole GiB (MemTotal moves by a few MB between boots).
    """
    quota = host.cgroup.cpu_quota
    return {
        "cpu_model": host.cpu_model,
        "isa": sorted(host.isa_flags),
        "logical_cpus": len(host.cpus),
        "allowed_cpus": _cpulist(set(host.allowed_cpus)),
        "physical_cores_by_node": {str(k): v for k, v in host.physical_cores_by_node().items()},
        "smt": host.smt_active,
        "memory_nodes": list(host.memory_nodes()),
        "mem_total_gib": round(host.mem_total_bytes / GIB),
        "cgroup_memory_limit_gib": (
            None if host.cgroup.memory_limit is None else round(host.cgroup.memory_limit / GIB)
        ),
        "cgroup_cpu_quota": None if quota is None else round(quota.cpus, 2),
    }


def shape_key(shape: ExpertShape) -> dict[str, int]:
    """The parts of the shape the kernel's speed depends on (not the model's name or depth)."""
    return {
        "hidden": shape.hidden,
        "intermediate": shape.intermediate,
        "top_k": shape.top_k,
        "experts": shape.experts,
    }


@dataclass(frozen=True)
class TuneKey:
    fingerprint: dict[str, Any]
    shape: dict[str, int]
    method: str

    def digest(self) -> str:
        canonical = json.dumps(
            {"fingerprint": self.fingerprint, "shape": self.shape, "method": self.method},
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def filename(self) -> str:
        s = self.shape
        return (
            f"{self.method}-{s['hidden']}x{s['intermediate']}-top{s['top_k']}-{self.digest()}.json"
        )


def tune_key(host: HostFacts, shape: ExpertShape, method: str) -> TuneKey:
    return TuneKey(host_fingerprint(host), shape_key(shape), method)


@dataclass(frozen=True)
class Tuned:
    """A stored measurement: the layout to use and what it and the rule measured."""

    threads: int
    numa_nodes: tuple[int, ...]
    threads_per_pool: tuple[int, ...]
    gbps: float
    rule_threads: int
    rule_gbps: float | None
    bandwidth_gbps: float
    measured_at: str
    path: Path

    @property
    def pools(self) -> int:
        return len(self.numa_nodes)


def lookup(directory: Path, key: TuneKey) -> Tuned | None:
    """The record for `key`, or None when there is none; a damaged record is refused."""
    path = directory / key.filename()
    if not path.is_file():
        return None
    fix = f"delete {path} or run `kthybrid-serve tune` again"
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TuneError(f"tune record {path} is unreadable ({error}); {fix}") from error
    expected = {"fingerprint": key.fingerprint, "shape": key.shape, "method": key.method}
    try:
        if record["format"] != RECORD_FORMAT or record["key"] != expected:
            raise TuneError(
                f"tune record {path} is not for this host, model shape and method; {fix}"
            )
        nodes = tuple(int(n) for n in record["numa_nodes"])
        per_pool = tuple(int(t) for t in record["threads_per_pool"])
        threads = int(record["threads"])
        if (
            not nodes
            or len(nodes) != len(per_pool)
            or sum(per_pool) != threads
            or min(per_pool) < 1
        ):
            raise TuneError(f"tune record {path} holds an impossible pool layout; {fix}")
        return Tuned(
            threads=threads,
            numa_nodes=nodes,
            threads_per_pool=per_pool,
            gbps=float(record["gbps"]),
            rule_threads=int(record["rule_threads"]),
            rule_gbps=None if record["rule_gbps"] is None else float(record["rule_gbps"]),
            bandwidth_gbps=float(record["bandwidth_gbps"]),
            measured_at=str(record["measured_at"]),
            path=path,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise TuneError(f"tune record {path} is damaged (missing or bad {error}); {fix}") from error


def _layout(nodes: tuple[int, ...], per_pool: tuple[int, ...]) -> str:
    return ", ".join(f"node {n}: {t}" for n, t in zip(nodes, per_pool, strict=True))


def tuned_threads(
    host: HostFacts,
    shape: ExpertShape,
    method: str,
    request: ThreadRequest,
    rule: ThreadPlan,
    environ: Mapping[str, str],
) -> tuple[ThreadPlan, Tuned | None]:
    """The plan's threads: the tune record's when one matches, else the rule's.

    A thread count, pool count or node list given by the user wins over a record; converted
    AMX weights fix the pool count, so a record with another count does not apply.
    """
    if request.cpuinfer is not None or request.pools is not None or request.nodes is not None:
        return rule, None
    tuned = lookup(tune_dir(environ), tune_key(host, shape, method))
    if tuned is None:
        return rule, None
    if request.required_pools is not None and tuned.pools != request.required_pools:
        return rule, None
    rule_figure = f"{tuned.rule_gbps:.1f} GB/s" if tuned.rule_gbps is not None else "no figure"
    cpuinfer = PlanItem(
        "--kt-cpuinfer",
        str(tuned.threads),
        f"measured by `kthybrid-serve tune` on {tuned.measured_at}: {tuned.gbps:.1f} GB/s of "
        f"expert weights with {tuned.threads} threads, the best of its runs; the rule gives "
        f"{rule.cpuinfer} here (tuned against {tuned.rule_threads}: {rule_figure}); record "
        f"{tuned.path}",
        "measured",
    )
    pools = PlanItem(
        "--kt-threadpool-count", str(tuned.pools), "the measured layout's pools", "measured"
    )
    nodes = PlanItem(
        "--kt-numa-nodes",
        " ".join(map(str, tuned.numa_nodes)),
        "pool i pinned to node i; threads per pool "
        + _layout(tuned.numa_nodes, tuned.threads_per_pool),
        "measured",
    )
    plan = ThreadPlan(
        tuned.threads, tuned.numa_nodes, tuned.threads_per_pool, (cpuinfer, pools, nodes)
    )
    return plan, tuned


def ceiling_item(
    tuned: Tuned | None, shape: ExpertShape, method: str, gpu_experts_per_layer: int
) -> PlanItem:
    """The CPU side's decode ceiling: active expert bytes per token on the CPU / measured GB/s."""
    if tuned is None:
        return PlanItem(
            "CPU decode ceiling",
            "not measured",
            "run `kthybrid-serve tune` to measure kt-kernel's GB/s on this host; the plan then "
            "states the tokens/s the CPU experts allow",
        )
    tokens = decode_ceiling(tuned.gbps, shape, method, gpu_experts_per_layer)
    share = max(0.0, 1 - gpu_experts_per_layer / shape.experts) if shape.experts else 0.0
    per_token = (
        shape.moe_layers * shape.top_k * share
        * bytes_per_expert(method, shape.hidden, shape.intermediate)
    )  # fmt: skip
    value = "unbounded" if tokens == float("inf") else f"{tokens:.1f} tokens/s"
    return PlanItem(
        "CPU decode ceiling",
        value,
        f"{shape.moe_layers} MoE layers x top-{shape.top_k} x {share:.0%} of the experts on the "
        f"CPU x {bytes_per_expert(method, shape.hidden, shape.intermediate) / MIB:.1f} MiB = "
        f"{per_token / MIB:.0f} MiB of {method} experts per token, over the {tuned.gbps:.1f} "
        "GB/s measured by `kthybrid-serve tune`",
        "measured",
    )
