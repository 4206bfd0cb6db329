"""Read the host (CPUs, NUMA, memory, cgroup, shm, limits, ISA, GPUs) through one root path."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kthybrid_serve.errors import HostReadError, LauncherError
from kthybrid_serve.units import KIB, parse_size

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
class Gpu:
    """One NVIDIA GPU as NVML reports it, or as given with --gpu."""

    index: int
    name: str
    memory_bytes: int
    compute_capability: tuple[int, int]
    driver_version: str | None = None
    cuda_driver_version: int | None = None  # e.g. 12080 for CUDA 12.8
    numa_node: int | None = None
    pci_bus_id: str | None = None
    source: str = "nvml"  # "nvml" or "flag"

    @property
    def cc_text(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


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


@dataclass(frozen=True)
class HostFacts:
    """Everything the planner needs to know about the machine."""

    root: str
    cpus: tuple[Cpu, ...]
    nodes: tuple[NumaNode, ...]
    allowed_cpus: frozenset[int]
    mem_total_bytes: int
    mem_available_bytes: int
    cgroup_version: int | None
    cgroup_memory_limit: int | None
    shm_bytes: int | None
    memlock_bytes: int | None  # None: unlimited, or unknown when memlock_known is False
    isa_flags: frozenset[str]
    cpu_model: str
    gpus: tuple[Gpu, ...]
    gpu_source: str
    memlock_known: bool = True
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

    def hugepages_free_bytes(self) -> int:
        return sum(size * free for n in self.nodes for size, (_, free) in n.hugepages.items())

    def hugepages_total_bytes(self) -> int:
        return sum(size * total for n in self.nodes for size, (total, _) in n.hugepages.items())


def parse_cpulist(text: str) -> list[int]:
    """The kernel's list format: "0-3,8,10-11" (empty means none)."""
    result: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            low, _, high = part.partition("-")
            stride = 1
            if ":" in high:  # "0-15:2" strides exist in cpuset syntax
                high, _, step = high.partition(":")
                stride = int(step)
            result.extend(range(int(low), int(high) + 1, stride))
        else:
            result.append(int(part))
    return sorted(set(result))


def format_cpulist(cpus: Iterable[int]) -> str:
    ordered = sorted(set(cpus))
    ranges: list[str] = []
    start = prev = -2
    for cpu in [*ordered, -10]:
        if cpu == prev + 1:
            prev = cpu
            continue
        if start >= 0:
            ranges.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    return ",".join(ranges)


class HostReader:
    """Reads files below `root` exactly as the kernel lays them out."""

    def __init__(self, root: str = "/") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise HostReadError(f"--host-root {root} is not a directory; give a host tree or /")
        self.notes: list[str] = []

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str) -> str | None:
        try:
            return self.path(absolute).read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
            return None

    def read_int(self, absolute: str) -> int | None:
        text = self.read(absolute)
        if text is None:
            return None
        try:
            return int(text.strip())
        except ValueError:
            return None

    # -- CPUs and NUMA --------------------------------------------------------

    def online_cpus(self) -> list[int]:
        text = self.read("/sys/devices/system/cpu/online")
        if text is not None:
            return parse_cpulist(text)
        found = []
        cpu_dir = self.path("/sys/devices/system/cpu")
        if cpu_dir.is_dir():
            for entry in cpu_dir.iterdir():
                if re.fullmatch(r"cpu[0-9]+", entry.name):
                    found.append(int(entry.name[3:]))
        if found:
            return sorted(found)
        count = self.read("/proc/cpuinfo")
        if count is None:
            raise HostReadError(
                f"cannot read CPUs below {self.root}: neither /sys/devices/system/cpu "
                "nor /proc/cpuinfo exists; mount the host's /sys and /proc"
            )
        return list(range(len(re.findall(r"^processor\s*:", count, flags=re.M))))

    def numa_nodes(self, online: list[int]) -> list[NumaNode]:
        node_dir = self.path("/sys/devices/system/node")
        nodes: list[NumaNode] = []
        if node_dir.is_dir():
            for entry in sorted(node_dir.iterdir(), key=lambda p: p.name):
                match = re.fullmatch(r"node([0-9]+)", entry.name)
                if match is None:
                    continue
                node = int(match.group(1))
                base = f"/sys/devices/system/node/{entry.name}"
                cpus = parse_cpulist(self.read(f"{base}/cpulist") or "")
                meminfo = self.read(f"{base}/meminfo") or ""
                mem = re.search(r"MemTotal:\s+([0-9]+)\s*kB", meminfo)
                nodes.append(
                    NumaNode(
                        node=node,
                        cpus=tuple(c for c in cpus if c in online),
                        memory_bytes=int(mem.group(1)) * KIB if mem else 0,
                        hugepages=self._hugepages(f"{base}/hugepages"),
                    )
                )
        if not nodes:
            # Kernels without NUMA support have no node directory: one node holds all.
            self.notes.append("no /sys/devices/system/node: treating the host as one NUMA node")
            whole = self._meminfo()
            nodes.append(
                NumaNode(
                    node=0,
                    cpus=tuple(online),
                    memory_bytes=whole.get("MemTotal", 0),
                    hugepages=self._hugepages("/sys/kernel/mm/hugepages"),
                )
            )
        return sorted(nodes, key=lambda n: n.node)

    def _hugepages(self, base: str) -> dict[int, tuple[int, int]]:
        pages: dict[int, tuple[int, int]] = {}
        directory = self.path(base)
        if not directory.is_dir():
            return pages
        for entry in directory.iterdir():
            match = re.fullmatch(r"hugepages-([0-9]+)kB", entry.name)
            if match is None:
                continue
            total = self.read_int(f"{base}/{entry.name}/nr_hugepages") or 0
            free = self.read_int(f"{base}/{entry.name}/free_hugepages")
            pages[int(match.group(1)) * KIB] = (total, total if free is None else free)
        return pages

    def cpus(self, online: list[int], nodes: list[NumaNode]) -> list[Cpu]:
        node_of = {cpu: n.node for n in nodes for cpu in n.cpus}
        result = []
        for cpu in online:
            base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
            core = self.read_int(f"{base}/core_id")
            package = self.read_int(f"{base}/physical_package_id")
            if core is None:
                # Without topology every CPU is its own core: we cannot tell siblings apart.
                core = cpu
            result.append(
                Cpu(cpu=cpu, core_id=core, package_id=package or 0, node=node_of.get(cpu, 0))
            )
        if not self.path("/sys/devices/system/cpu/cpu0/topology/core_id").exists():
            self.notes.append("no CPU topology in sysfs: cannot tell hyperthreads from cores")
        return result

    # -- memory, cgroup, limits -----------------------------------------------

    def _meminfo(self) -> dict[str, int]:
        values: dict[str, int] = {}
        for line in (self.read("/proc/meminfo") or "").splitlines():
            match = re.match(r"(\w+):\s+([0-9]+)(\s*kB)?", line)
            if match:
                values[match.group(1)] = int(match.group(2)) * (KIB if match.group(3) else 1)
        return values

    def cgroup(self) -> tuple[int | None, frozenset[int] | None, int | None]:
        """(cgroup version, cpuset, memory limit) for this process's cgroup."""
        entries: dict[str, str] = {}
        for line in (self.read("/proc/self/cgroup") or "").splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3:
                for controller in parts[1].split(",") if parts[1] else [""]:
                    entries[controller] = parts[2]
        mount = "/sys/fs/cgroup"
        if self.path(f"{mount}/cgroup.controllers").exists():
            return 2, *self._cgroup_v2(mount, entries.get("", "/"))
        if self.path(f"{mount}/memory").is_dir() or self.path(f"{mount}/cpuset").is_dir():
            return 1, *self._cgroup_v1(mount, entries)
        return None, None, None

    def _candidates(self, mount: str, relative: str) -> list[str]:
        """The cgroup directory, tried at the path /proc names and at the mount itself.

        Inside a container with a private cgroup namespace the mount is the
        container's own cgroup, while /proc/self/cgroup may still name the host
        path; the leaf is then the mount root.
        """
        relative = relative.strip("/")
        chain = []
        if relative:
            parts = relative.split("/")
            for depth in range(len(parts), 0, -1):
                candidate = f"{mount}/{'/'.join(parts[:depth])}"
                if self.path(candidate).is_dir():
                    chain.append(candidate)
        chain.append(mount)
        return chain

    def _cgroup_v2(self, mount: str, relative: str) -> tuple[frozenset[int] | None, int | None]:
        cpuset: frozenset[int] | None = None
        limit: int | None = None
        for directory in self._candidates(mount, relative):
            text = self.read(f"{directory}/cpuset.cpus.effective")
            if cpuset is None and text and text.strip():
                cpuset = frozenset(parse_cpulist(text))
            raw = self.read(f"{directory}/memory.max")
            if raw and raw.strip() != "max":
                value = int(raw.strip())
                limit = value if limit is None else min(limit, value)
        return cpuset, limit

    def _cgroup_v1(
        self, mount: str, entries: dict[str, str]
    ) -> tuple[frozenset[int] | None, int | None]:
        cpuset: frozenset[int] | None = None
        limit: int | None = None
        for directory in self._candidates(f"{mount}/cpuset", entries.get("cpuset", "/")):
            text = self.read(f"{directory}/cpuset.effective_cpus") or self.read(
                f"{directory}/cpuset.cpus"
            )
            if text and text.strip():
                cpuset = frozenset(parse_cpulist(text))
                break
        for directory in self._candidates(f"{mount}/memory", entries.get("memory", "/")):
            value = self.read_int(f"{directory}/memory.limit_in_bytes")
            # v1 writes a page-rounded LONG_MAX when there is no limit.
            if value is not None and value < 2**62:
                limit = value if limit is None else min(limit, value)
        return cpuset, limit

    def affinity(self) -> frozenset[int] | None:
        if self.root == Path("/"):
            return frozenset(os.sched_getaffinity(0))
        status = self.read("/proc/self/status") or ""
        match = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, flags=re.M)
        return frozenset(parse_cpulist(match.group(1))) if match else None

    def shm_bytes(self, mem_total: int) -> int | None:
        """Size of /dev/shm.

        Read from the mount table (what `df` would say without needing statvfs),
        so that a host tree can stand in: tmpfs prints `size=` when it was given
        one and otherwise defaults to half of RAM. Falls back to statvfs of
        <root>/dev/shm when the mount table does not list it.
        """
        for table in ("/proc/self/mounts", "/proc/mounts"):
            text = self.read(table)
            if text is None:
                continue
            for line in text.splitlines():
                fields = line.split()
                if len(fields) >= 4 and fields[1] == "/dev/shm":
                    options = dict([*opt.split("=", 1), ""][:2] for opt in fields[3].split(","))
                    if "size" in options:
                        return parse_size(options["size"])
                    if fields[2] == "tmpfs":
                        return mem_total // 2
            break
        shm = self.path("/dev/shm")
        if shm.is_dir():
            stats = os.statvfs(shm)
            return stats.f_frsize * stats.f_blocks
        return None

    def memlock_bytes(self) -> tuple[bool, int | None]:
        """(known, soft limit); a known None means unlimited."""
        text = self.read("/proc/self/limits")
        if text is None:
            return False, None
        match = re.search(r"^Max locked memory\s+(\S+)", text, flags=re.M)
        if match is None:
            return False, None
        return True, None if match.group(1) == "unlimited" else int(match.group(1))

    def cpuinfo(self) -> tuple[frozenset[str], str]:
        text = self.read("/proc/cpuinfo") or ""
        flags_match = re.search(r"^flags\s*:(.*)$", text, flags=re.M)
        model_match = re.search(r"^model name\s*:\s*(.*)$", text, flags=re.M)
        flags = set(flags_match.group(1).split()) if flags_match else set()
        # cpuinfo spells some flags without the underscore on older kernels.
        normalised = {f for f in ISA_FLAGS if f in flags or f.replace("_", "") in flags}
        return frozenset(normalised), model_match.group(1).strip() if model_match else "unknown"


def parse_gpu_spec(spec: str, index: int) -> Gpu:
    """`NAME,MEMORY,CC`, e.g. `NVIDIA GeForce RTX 5090,32GiB,12.0`."""
    parts = [p.strip() for p in spec.rsplit(",", 2)]
    if len(parts) != 3 or not parts[0]:
        raise ValueError(f"--gpu {spec!r}: expected NAME,MEMORY,CC (e.g. 'NVIDIA H200,141GiB,9.0')")
    match = re.fullmatch(r"([0-9]+)\.([0-9]+)", parts[2])
    if match is None:
        raise ValueError(f"--gpu {spec!r}: compute capability must look like 12.0")
    return Gpu(
        index=index,
        name=parts[0],
        memory_bytes=parse_size(parts[1]),
        compute_capability=(int(match.group(1)), int(match.group(2))),
        source="flag",
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_nvml_gpus(notes: list[str]) -> tuple[Gpu, ...]:
    """GPUs through NVML; an empty tuple when there is no driver or no device."""
    try:
        import pynvml
    except ImportError:
        notes.append("nvidia-ml-py is not installed: cannot query GPUs")
        return ()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        notes.append(f"NVML init failed: {error}")
        return ()
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        try:
            cuda_driver: int | None = int(pynvml.nvmlSystemGetCudaDriverVersion())
        except pynvml.NVMLError:
            cuda_driver = None
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            numa: int | None
            try:
                numa = int(pynvml.nvmlDeviceGetNumaNodeId(handle))
            except (pynvml.NVMLError, AttributeError) as error:
                # Not supported on every host (seen on an H200: NotSupported).
                numa = None
                notes.append(f"GPU {index}: NVML NUMA-node query unavailable ({error})")
            try:
                bus: str | None = _text(pynvml.nvmlDeviceGetPciInfo(handle).busId)
            except pynvml.NVMLError:
                bus = None
            gpus.append(
                Gpu(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_bytes=int(memory.total),
                    compute_capability=(int(major), int(minor)),
                    driver_version=driver,
                    cuda_driver_version=cuda_driver,
                    numa_node=numa if numa is not None and numa >= 0 else None,
                    pci_bus_id=bus,
                )
            )
        return tuple(gpus)
    except pynvml.NVMLError as error:
        notes.append(f"NVML query failed: {error}")
        return ()
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def read_host(root: str = "/", gpu_specs: Iterable[str] = ()) -> HostFacts:
    """Read all host facts below `root`; GPUs from `gpu_specs` if given, else NVML."""
    reader = HostReader(root)
    online = reader.online_cpus()
    nodes = reader.numa_nodes(online)
    cpus = reader.cpus(online, nodes)
    meminfo = reader._meminfo()
    mem_total = meminfo.get("MemTotal") or sum(n.memory_bytes for n in nodes)
    if not mem_total:
        raise HostReadError(f"cannot read memory size below {root}: no /proc/meminfo")
    version, cpuset, limit = reader.cgroup()
    allowed = set(online)
    if cpuset is not None:
        allowed &= cpuset
    affinity = reader.affinity()
    if affinity is not None:
        allowed &= affinity
    if not allowed:
        raise HostReadError("no CPU is allowed to this process (cgroup cpuset and affinity)")
    memlock_known, memlock = reader.memlock_bytes()
    flags, model = reader.cpuinfo()
    specs = list(gpu_specs)
    notes = reader.notes
    if specs:
        try:
            gpus = tuple(parse_gpu_spec(spec, i) for i, spec in enumerate(specs))
        except ValueError as error:
            raise LauncherError(str(error)) from error
        gpu_source = "flag"
    else:
        gpus = read_nvml_gpus(notes)
        gpu_source = "nvml"
    if not memlock_known:
        notes.append("locked-memory limit unknown (no /proc/self/limits)")
    return HostFacts(
        root=str(root),
        cpus=tuple(cpus),
        nodes=tuple(nodes),
        allowed_cpus=frozenset(allowed),
        mem_total_bytes=mem_total,
        mem_available_bytes=meminfo.get("MemAvailable", mem_total),
        cgroup_version=version,
        cgroup_memory_limit=limit,
        shm_bytes=reader.shm_bytes(mem_total),
        memlock_bytes=memlock if memlock_known else None,
        isa_flags=flags,
        cpu_model=model,
        gpus=gpus,
        gpu_source=gpu_source,
        memlock_known=memlock_known,
        notes=tuple(notes),
    )
