"""Read the host (CPUs, NUMA, memory, cgroup, shm, limits, ISA, GPUs) through one root path."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kthybrid_serve.errors import HostReadError, UsageError
from kthybrid_serve.host.cgroup import CgroupLimits, read_cgroup
from kthybrid_serve.host.gpus import Gpu, parse_gpu_spec, read_nvml_gpus, with_pci_affinity
from kthybrid_serve.host.hostfs import HostTree, format_cpulist, parse_cpulist, parse_meminfo
from kthybrid_serve.units import KIB, parse_size
from kthybrid_serve.untrusted import printable

__all__ = ["Cpu", "Gpu", "HostFacts", "NumaNode", "format_cpulist", "parse_cpulist", "read_host"]

# Flags kt-kernel's _cpu_detect.py and its MXFP4/AMX kernels look at.
ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_vbmi",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


@dataclass(frozen=True)
class Cpu:
    """One logical CPU and where it sits."""

    cpu: int
    core_id: int
    package_id: int
    node: int

    @property
    def physical_core(self) -> tuple[int, int]:
        return (self.package_id, self.core_id)


@dataclass(frozen=True)
class NumaNode:
    node: int
    cpus: tuple[int, ...]
    memory_bytes: int
    hugepages: dict[int, tuple[int, int]] = field(default_factory=dict)  # size -> (total, free)
    free_bytes: int | None = None  # MemFree + FilePages: what allocations can get here


@dataclass(frozen=True)
class HostFacts:
    """Everything the planner needs to know about the machine."""

    root: str
    cpus: tuple[Cpu, ...]
    nodes: tuple[NumaNode, ...]
    allowed_cpus: frozenset[int]
    mem_total_bytes: int
    mem_available_bytes: int
    cgroup: CgroupLimits
    shm_bytes: int | None
    memlock_bytes: int | None  # None: unlimited, or unknown when memlock_known is False
    isa_flags: frozenset[str]
    cpu_model: str
    gpus: tuple[Gpu, ...]
    gpu_source: str
    memlock_known: bool = True
    isolated_cpus: frozenset[int] = frozenset()
    notes: tuple[str, ...] = ()

    def physical_cores_by_node(self) -> dict[int, int]:
        """Allowed physical cores per NUMA node (a core counts once, whatever its siblings)."""
        cores: dict[int, set[tuple[int, int]]] = {}
        for cpu in self.cpus:
            if cpu.cpu in self.allowed_cpus:
                cores.setdefault(cpu.node, set()).add(cpu.physical_core)
        return {node: len(found) for node, found in sorted(cores.items())}

    @property
    def allowed_physical_cores(self) -> int:
        return sum(self.physical_cores_by_node().values())

    @property
    def smt_active(self) -> bool:
        return len({c.physical_core for c in self.cpus}) < len(self.cpus)

    @property
    def cgroup_version(self) -> int | None:
        return self.cgroup.version

    @property
    def cgroup_memory_limit(self) -> int | None:
        return self.cgroup.memory_limit

    def memory_nodes(self) -> tuple[int, ...]:
        """Nodes this process may allocate on (cpuset.mems), among those with memory."""
        with_memory = [n.node for n in self.nodes if n.memory_bytes > 0]
        if self.cgroup.mems is None:
            return tuple(with_memory)
        return tuple(n for n in with_memory if n in self.cgroup.mems)

    def memory_available_bytes(self) -> int:
        """MemAvailable, or less when cpuset.mems confines allocations to some nodes."""
        allowed = set(self.memory_nodes())
        if self.cgroup.mems is None or allowed == {n.node for n in self.nodes}:
            return self.mem_available_bytes
        on_nodes = sum(
            (n.free_bytes if n.free_bytes is not None else n.memory_bytes)
            for n in self.nodes
            if n.node in allowed
        )
        return min(self.mem_available_bytes, on_nodes)

    def hugepages_total_bytes(self) -> int:
        return sum(size * total for n in self.nodes for size, (total, _) in n.hugepages.items())


# -- CPUs and NUMA ------------------------------------------------------------------


def _online_cpus(tree: HostTree) -> list[int]:
    online = tree.read_cpulist("/sys/devices/system/cpu/online")
    if online is not None:
        return online
    found = [n for _, n in tree.entries("/sys/devices/system/cpu", r"cpu([0-9]+)")]
    if found:
        return found
    text = tree.read("/proc/cpuinfo")
    if text is None:
        raise HostReadError(
            f"cannot read CPUs below {tree.root}: neither /sys/devices/system/cpu "
            "nor /proc/cpuinfo exists; mount the host's /sys and /proc"
        )
    return list(range(len(re.findall(r"^processor\s*:", text, flags=re.M))))


def _hugepages(tree: HostTree, base: str) -> dict[int, tuple[int, int]]:
    pages: dict[int, tuple[int, int]] = {}
    for entry, size_kb in tree.entries(base, r"hugepages-([0-9]+)kB"):
        total = tree.read_int(f"{base}/{entry}/nr_hugepages", high=2**40) or 0
        free = tree.read_int(f"{base}/{entry}/free_hugepages", high=2**40)
        pages[size_kb * KIB] = (total, total if free is None else min(free, total))
    return pages


def _meminfo(tree: HostTree, absolute: str) -> dict[str, int] | None:
    """A meminfo file in bytes, None when it does not exist; one without MemTotal is refused."""
    text = tree.read(absolute)
    if text is None:
        return None
    values = parse_meminfo(text)
    if "MemTotal" not in values:
        raise HostReadError(
            f"{tree.path(absolute)} holds no MemTotal line ({printable(text.strip(), 60)!r} ...): "
            "not a meminfo file; give a real host tree"
        )
    return values


def _numa_nodes(tree: HostTree, online: list[int], notes: list[str]) -> list[NumaNode]:
    nodes: list[NumaNode] = []
    for entry, node in tree.entries("/sys/devices/system/node", r"node([0-9]+)"):
        base = f"/sys/devices/system/node/{entry}"
        cpus = tree.read_cpulist(f"{base}/cpulist") or []
        meminfo = _meminfo(tree, f"{base}/meminfo") or {}
        free = None
        if "MemFree" in meminfo:
            free = min(meminfo["MemFree"] + meminfo.get("FilePages", 0), meminfo.get("MemTotal", 0))
        nodes.append(
            NumaNode(
                node=node,
                cpus=tuple(c for c in cpus if c in online),
                memory_bytes=meminfo.get("MemTotal", 0),
                hugepages=_hugepages(tree, f"{base}/hugepages"),
                free_bytes=free,
            )
        )
    if not nodes:
        # Kernels without NUMA support have no node directory: one node holds all.
        notes.append("no /sys/devices/system/node: treating the host as one NUMA node")
        whole = _meminfo(tree, "/proc/meminfo") or {}
        nodes.append(
            NumaNode(0, tuple(online), whole.get("MemTotal", 0),
                     _hugepages(tree, "/sys/kernel/mm/hugepages"))
        )  # fmt: skip
    return nodes


def _cpus(tree: HostTree, online: list[int], nodes: list[NumaNode], notes: list[str]) -> list[Cpu]:
    node_of = {cpu: n.node for n in nodes for cpu in n.cpus}
    result = []
    for cpu in online:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        core = tree.read_int(f"{base}/core_id", high=2**31)
        package = tree.read_int(f"{base}/physical_package_id", low=-1, high=2**31)
        # Without topology every CPU is its own core: we cannot tell siblings apart.
        result.append(
            Cpu(cpu, cpu if core is None else core, max(0, package or 0), node_of.get(cpu, 0))
        )
    if not tree.path("/sys/devices/system/cpu/cpu0/topology/core_id").exists():
        notes.append("no CPU topology in sysfs: cannot tell hyperthreads from cores")
    return result


def _isolated(tree: HostTree) -> frozenset[int]:
    """CPUs the kernel keeps for other work: isolcpus and nohz_full."""
    cpus: set[int] = set()
    for name in ("isolated", "nohz_full"):
        listed = tree.read_cpulist(f"/sys/devices/system/cpu/{name}")
        if listed:
            cpus.update(listed)
    return frozenset(cpus)


def _affinity(tree: HostTree) -> frozenset[int] | None:
    if tree.root == Path("/"):
        return frozenset(os.sched_getaffinity(0))
    status = tree.read("/proc/self/status") or ""
    match = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, flags=re.M)
    return frozenset(parse_cpulist(match.group(1), "Cpus_allowed_list")) if match else None


# -- memory, shm, limits, ISA ------------------------------------------------------


def _shm_bytes(tree: HostTree, mem_total: int) -> int | None:
    """Size of /dev/shm from the mount table (tmpfs without size= is half of RAM)."""
    for table in ("/proc/self/mounts", "/proc/mounts"):
        text = tree.read(table)
        if text is None:
            continue
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[1] == "/dev/shm":
                options = dict([*opt.split("=", 1), ""][:2] for opt in fields[3].split(","))
                if "size" in options:
                    return _tmpfs_size(options["size"], mem_total)
                if fields[2] == "tmpfs":
                    return mem_total // 2
        break
    shm = tree.path("/dev/shm")
    if shm.is_dir():
        stats = os.statvfs(shm)
        return stats.f_frsize * stats.f_blocks
    return None


def _tmpfs_size(value: str, mem_total: int) -> int:
    if value.endswith("%") and value[:-1].isdigit():
        return mem_total * int(value[:-1]) // 100
    try:
        return parse_size(value)
    except ValueError:
        raise HostReadError(f"/dev/shm's mount option size={value[:40]!r} is not a size") from None


def _memlock(tree: HostTree) -> tuple[bool, int | None]:
    """(known, soft limit); a known None means unlimited."""
    text = tree.read("/proc/self/limits")
    match = re.search(r"^Max locked memory\s+(\S+)", text or "", flags=re.M)
    if match is None:
        return False, None
    if match.group(1) == "unlimited":
        return True, None
    if not match.group(1).isdigit():
        raise HostReadError(f"/proc/self/limits: locked memory {match.group(1)[:20]!r}")
    return True, int(match.group(1))


def read_cpuinfo(tree: HostTree) -> tuple[frozenset[str], str]:
    """The ISA flags the launcher knows (ISA_FLAGS) that /proc/cpuinfo lists, and the model."""
    text = tree.read("/proc/cpuinfo") or ""
    flags_match = re.search(r"^flags\s*:(.*)$", text, flags=re.M)
    model_match = re.search(r"^model name\s*:\s*(.*)$", text, flags=re.M)
    flags = set(flags_match.group(1).split()) if flags_match else set()
    # cpuinfo spells some flags without the underscore on older kernels.
    normalised = {f for f in ISA_FLAGS if f in flags or f.replace("_", "") in flags}
    return frozenset(normalised), model_match.group(1).strip()[:100] if model_match else "unknown"


def _gpus(specs: list[str], notes: list[str]) -> tuple[tuple[Gpu, ...], str]:
    if not specs:
        return read_nvml_gpus(notes), "nvml"
    try:
        return tuple(parse_gpu_spec(spec, i) for i, spec in enumerate(specs)), "flag"
    except ValueError as error:
        raise UsageError(str(error)) from None


def read_host(root: str = "/", gpu_specs: Iterable[str] = ()) -> HostFacts:
    """Read all host facts below `root`; GPUs from `gpu_specs` if given, else NVML."""
    tree = HostTree(root)
    notes: list[str] = []
    online = _online_cpus(tree)
    nodes = _numa_nodes(tree, online, notes)
    cpus = _cpus(tree, online, nodes, notes)
    # Garbage in /proc/meminfo is an error even where the nodes' meminfo could stand in.
    meminfo = _meminfo(tree, "/proc/meminfo") or {}
    mem_total = meminfo.get("MemTotal") or sum(n.memory_bytes for n in nodes)
    if not mem_total:
        raise HostReadError(f"cannot read the memory size below {root}: no /proc/meminfo")
    cgroup = read_cgroup(tree)
    isolated = _isolated(tree)
    allowed = set(online) - isolated
    for limit in (cgroup.cpuset, _affinity(tree)):
        if limit is not None:
            allowed &= limit
    if isolated & set(online):
        notes.append(f"isolated/nohz_full CPUs {format_cpulist(isolated)} are not used")
    if not allowed:
        raise HostReadError(
            "no CPU is left to this process (online CPUs, cgroup cpuset, affinity, isolated)"
        )
    memlock_known, memlock = _memlock(tree)
    flags, model = read_cpuinfo(tree)
    gpus, gpu_source = _gpus(list(gpu_specs), notes)
    gpus = with_pci_affinity(tree, gpus, notes)
    if not memlock_known:
        notes.append("locked-memory limit unknown (no /proc/self/limits)")
    return HostFacts(
        root=str(root),
        cpus=tuple(cpus),
        nodes=tuple(nodes),
        allowed_cpus=frozenset(allowed),
        mem_total_bytes=mem_total,
        mem_available_bytes=min(meminfo.get("MemAvailable", mem_total), mem_total),
        cgroup=cgroup,
        shm_bytes=_shm_bytes(tree, mem_total),
        memlock_bytes=memlock if memlock_known else None,
        isa_flags=flags,
        cpu_model=model,
        gpus=gpus,
        gpu_source=gpu_source,
        memlock_known=memlock_known,
        isolated_cpus=isolated,
        notes=tuple(notes),
    )
