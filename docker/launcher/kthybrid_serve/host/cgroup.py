"""This process's cgroup limits (v1 and v2): cpuset, memory nodes, CPU quota, memory max/high."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kthybrid_serve.errors import HostReadError
from kthybrid_serve.host.hostfs import HostTree, parse_cpulist

MOUNT = "/sys/fs/cgroup"
# cgroup v1 writes a page-rounded LONG_MAX when there is no memory limit.
V1_UNLIMITED = 2**62


@dataclass(frozen=True)
class CpuQuota:
    """A CFS bandwidth limit: `quota` microseconds of CPU time per `period`."""

    quota_us: int
    period_us: int
    where: str  # the file that set it, for the plan's reason

    @property
    def cpus(self) -> float:
        return self.quota_us / self.period_us


@dataclass(frozen=True)
class CgroupLimits:
    version: int | None = None
    cpuset: frozenset[int] | None = None
    mems: frozenset[int] | None = None
    cpu_quota: CpuQuota | None = None
    memory_max: int | None = None
    memory_high: int | None = None

    @property
    def memory_limit(self) -> int | None:
        """The lower of max and high: above high the kernel throttles and reclaims hard."""
        limits = [v for v in (self.memory_max, self.memory_high) if v is not None]
        return min(limits) if limits else None


def _membership(tree: HostTree) -> dict[str, str]:
    """controller -> path from /proc/self/cgroup ('' is the v2 unified hierarchy)."""
    entries: dict[str, str] = {}
    for line in (tree.read("/proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                entries[controller] = parts[2].strip()
    return entries


def _chain(tree: HostTree, mount: str, relative: str) -> list[str]:
    """Leaf to root: the cgroup directory at the path /proc names, its parents, the mount.

    Inside a container with a private cgroup namespace the mount is the container's
    own cgroup while /proc/self/cgroup may name a host path; the mount then serves.
    """
    parts = [p for p in relative.strip().split("/") if p and p not in {".", ".."}]
    chain = []
    for depth in range(len(parts), 0, -1):
        candidate = f"{mount}/{'/'.join(parts[:depth])}"
        if tree.is_dir(candidate):
            chain.append(candidate)
    chain.append(mount)
    return chain


def _bytes_or_max(tree: HostTree, file: str) -> int | None:
    raw = tree.read(file)
    if raw is None or raw.strip() == "max":
        return None
    if not re.fullmatch(r"[0-9]{1,20}", raw.strip()):
        raise HostReadError(f"{tree.path(file)} holds {raw.strip()[:40]!r}, not bytes or 'max'")
    return int(raw.strip())


def _min(current: int | None, value: int | None) -> int | None:
    if value is None:
        return current
    return value if current is None else min(current, value)


def _v2(tree: HostTree, relative: str) -> CgroupLimits:
    cpuset = mems = None
    quota: CpuQuota | None = None
    memory_max = memory_high = None
    for directory in _chain(tree, MOUNT, relative):
        cpus_text = tree.read(f"{directory}/cpuset.cpus.effective")
        if cpuset is None and cpus_text and cpus_text.strip():
            cpuset = frozenset(parse_cpulist(cpus_text, f"{directory}/cpuset.cpus.effective"))
        mems_text = tree.read(f"{directory}/cpuset.mems.effective")
        if mems is None and mems_text and mems_text.strip():
            mems = frozenset(parse_cpulist(mems_text, f"{directory}/cpuset.mems.effective"))
        raw = tree.read(f"{directory}/cpu.max")
        if raw is not None:
            match = re.fullmatch(r"(max|[0-9]{1,15})(?:\s+([0-9]{1,15}))?", raw.strip())
            if match is None or (match.group(2) is not None and int(match.group(2)) == 0):
                raise HostReadError(
                    f"{tree.path(directory)}/cpu.max holds {raw.strip()[:40]!r}, "
                    "not 'QUOTA PERIOD' or 'max PERIOD'"
                )
            if match.group(1) != "max":
                found = CpuQuota(
                    int(match.group(1)), int(match.group(2) or 100000), f"{directory}/cpu.max"
                )
                if quota is None or found.cpus < quota.cpus:
                    quota = found
        memory_max = _min(memory_max, _bytes_or_max(tree, f"{directory}/memory.max"))
        memory_high = _min(memory_high, _bytes_or_max(tree, f"{directory}/memory.high"))
    return CgroupLimits(2, cpuset, mems, quota, memory_max, memory_high)


def _v1_quota(tree: HostTree, entries: dict[str, str]) -> CpuQuota | None:
    relative = entries.get("cpu", entries.get("cpuacct", "/"))
    best: CpuQuota | None = None
    for mount in (f"{MOUNT}/cpu,cpuacct", f"{MOUNT}/cpu"):
        if not tree.is_dir(mount):
            continue
        for directory in _chain(tree, mount, relative):
            quota = tree.read_int(f"{directory}/cpu.cfs_quota_us", low=-1, high=10**15)
            period = tree.read_int(f"{directory}/cpu.cfs_period_us", low=1, high=10**15)
            if quota is not None and quota > 0:
                found = CpuQuota(quota, period or 100000, f"{directory}/cpu.cfs_quota_us")
                if best is None or found.cpus < best.cpus:
                    best = found
        break
    return best


def _v1(tree: HostTree, entries: dict[str, str]) -> CgroupLimits:
    cpuset = mems = None
    for directory in _chain(tree, f"{MOUNT}/cpuset", entries.get("cpuset", "/")):
        for name in ("cpuset.effective_cpus", "cpuset.cpus"):
            text = tree.read(f"{directory}/{name}")
            if cpuset is None and text and text.strip():
                cpuset = frozenset(parse_cpulist(text, f"{directory}/{name}"))
        for name in ("cpuset.effective_mems", "cpuset.mems"):
            text = tree.read(f"{directory}/{name}")
            if mems is None and text and text.strip():
                mems = frozenset(parse_cpulist(text, f"{directory}/{name}"))
    limit = None
    for directory in _chain(tree, f"{MOUNT}/memory", entries.get("memory", "/")):
        value = tree.read_int(f"{directory}/memory.limit_in_bytes", low=0, high=2**64)
        if value is not None and value < V1_UNLIMITED:
            limit = _min(limit, value)
    return CgroupLimits(1, cpuset, mems, _v1_quota(tree, entries), limit, None)


def read_cgroup(tree: HostTree) -> CgroupLimits:
    entries = _membership(tree)
    if tree.path(f"{MOUNT}/cgroup.controllers").exists():
        return _v2(tree, entries.get("", "/"))
    if any(tree.is_dir(f"{MOUNT}/{c}") for c in ("memory", "cpuset", "cpu", "cpu,cpuacct")):
        return _v1(tree, entries)
    return CgroupLimits()
