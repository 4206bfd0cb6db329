"""Host memory facts, written once: what the CPU experts and the runtime need.

The launcher checks a host against these, and `plan --helm-values` prints the chart's
budget from them, so the chart and the launcher cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kthybrid_serve.units import GIB

EXPERT_OVERHEAD_FRACTION = 0.05  # kt-kernel's per-pool buffers and loader copies
RUNTIME_BYTES = 8 * GIB  # Python processes, torch, CUDA context, pinned staging buffers
CHART_SHM_GIB = 16  # the chart's memory-backed /dev/shm (counts against the pod's limit)
CHART_HEADROOM_GIB = 32  # the chart's allocator and page-cache slack above the launcher's need


@dataclass(frozen=True)
class KernelMemory:
    """What a kt-kernel CPU expert kernel keeps in memory per expert byte, as measured
    (bench/results/hugepages-*.json; tests/launcher/test_launcher_hugepages.py ties each)."""

    overhead: float  # resident growth over the expert bytes with no hugepages
    hugetlb_small_share: float  # with the 2 MiB pool: the share still on 4 KiB pages
    thp_share: float  # with `thp`: AnonHugePages / expert bytes
    thp_resident: float  # with `thp`: ordinary memory, as a multiple of 1 + overhead

    def ordinary_share(self, hugepages: str) -> float:
        """What the expert bytes are multiplied by (before the overhead) for the ordinary
        memory, THP included, that MemAvailable and the cgroup limit count."""
        if hugepages == "hugetlb":
            return self.hugetlb_small_share
        return self.thp_resident if hugepages == "thp" else 1.0


# Every kernel but the one below. Hugetlb small share 0.245, 0.189, 0.030, 0.058; THP
# 0.708-0.710, resident 1.023-1.024 (inside the 5%).
DEFAULT_KERNEL_MEMORY = KernelMemory(EXPERT_OVERHEAD_FRACTION, 0.25, 0.70, 1.0)
# kt-kernel's AVX2 MXFP4 kernel (AVX2MXFP4_MOE, its avx2 build's, on CPUs without
# AVX512F+AVX512BW), on an EPYC and on the AMX host with the avx2 build forced: resident
# 1.179x with no hugepages (its AVX-512 builds' kernel 1.00x), rounded up to 20%; with the
# pool 0.601 and 0.694 on 4 KiB pages (the hosts differ by 0.09: the budget keeps that margin
# above the higher); with `thp` 1.171-1.172 on THP and 1.369-1.372x resident: 1.16 x 1.20.
AVX2_MXFP4_KERNEL_MEMORY = KernelMemory(0.20, 0.75, 1.17, 1.16)


def expert_memory_with_overhead(
    expert_bytes: int, overhead: float = EXPERT_OVERHEAD_FRACTION
) -> int:
    return expert_bytes + int(expert_bytes * overhead)


def host_memory_needed(
    expert_bytes: int, kernel: KernelMemory = DEFAULT_KERNEL_MEMORY, hugepages: str = "off"
) -> int:
    """Ordinary RAM (what MemAvailable and the cgroup limit count) the server needs.

    With the experts on a hugetlb pool only the kernel's small-page share of them stays in
    ordinary memory; the pool itself is checked against the free hugepages.
    """
    share = kernel.ordinary_share(hugepages)
    resident = expert_memory_with_overhead(int(expert_bytes * share), kernel.overhead)
    return resident + RUNTIME_BYTES


def helm_values(expert_bytes: int, overhead: float = EXPERT_OVERHEAD_FRACTION) -> dict[str, int]:
    """The chart's `hostMemory.*` values for these experts (whole GiB, rounded up)."""
    return {
        "cpuExpertWeightsGi": math.ceil(expert_memory_with_overhead(expert_bytes, overhead) / GIB),
        "pinnedBuffersGi": math.ceil(RUNTIME_BYTES / GIB),
        "shmGi": CHART_SHM_GIB,
        "headroomGi": CHART_HEADROOM_GIB,
    }


def container_limit_gib(expert_bytes: int, overhead: float = EXPERT_OVERHEAD_FRACTION) -> int:
    """A server container's memory limit in GiB for these experts: the chart's budget without
    a hugepage pool (CPU experts with overhead, pinned buffers, /dev/shm, headroom), as
    compose's MEM_LIMIT and the fleet's FLEET_<i>_MEM_LIMIT take it."""
    return sum(helm_values(expert_bytes, overhead).values())
