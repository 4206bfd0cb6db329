"""Host memory facts, written once: what the CPU experts and the runtime need.

The launcher checks a host against these, and `plan --helm-values` prints the chart's
budget from them, so the chart and the launcher cannot drift apart.
"""

from __future__ import annotations

import math

from kthybrid_serve.units import GIB

EXPERT_OVERHEAD_FRACTION = 0.05  # kt-kernel's per-pool buffers and loader copies
# kt-kernel's AVX2 MXFP4 kernel (AVX2MXFP4_MOE, on CPUs without AVX512F+AVX512BW) keeps 1.18x
# the expert bytes resident where its AVX-512 builds' kernel keeps 1.00x (resident growth /
# expert bytes with no hugepages, bench/results/hugepages-*.json; tied by a test), rounded up.
AVX2_MXFP4_OVERHEAD_FRACTION = 0.20
RUNTIME_BYTES = 8 * GIB  # Python processes, torch, CUDA context, pinned staging buffers
CHART_SHM_GIB = 16  # the chart's memory-backed /dev/shm (counts against the pod's limit)
CHART_HEADROOM_GIB = 32  # the chart's allocator and page-cache slack above the launcher's need


def expert_memory_with_overhead(
    expert_bytes: int, overhead: float = EXPERT_OVERHEAD_FRACTION
) -> int:
    return expert_bytes + int(expert_bytes * overhead)


def host_memory_needed(
    expert_bytes: int, small_page_share: float = 1.0, overhead: float = EXPERT_OVERHEAD_FRACTION
) -> int:
    """Ordinary RAM (what MemAvailable and the cgroup limit count) the server needs.

    `small_page_share` (plan/hugepages.py's ordinary_memory_share) scales the expert bytes:
    with the experts on a hugetlb pool only that share of them stays in ordinary
    memory; the pool itself is checked against the free hugepages.
    """
    resident = expert_memory_with_overhead(int(expert_bytes * small_page_share), overhead)
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
