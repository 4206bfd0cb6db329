"""The host as the CPU bench sees it, and its read bandwidth.

One allowed logical CPU per physical core, by NUMA node; the last-level cache the working
set is sized against; and the read bandwidth: one thread per allowed physical core reading
(memchr for a byte that is not there, glibc's vectorised scan) a buffer much larger than the
last-level cache that those threads first touched, per NUMA node and all nodes at once.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kthybrid_serve.errors import BenchError, HostReadError
from kthybrid_serve.host.host import HostFacts
from kthybrid_serve.host.hostfs import HostTree
from kthybrid_serve.units import GIB, parse_size


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
