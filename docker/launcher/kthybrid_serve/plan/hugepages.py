"""Hugepages for the CPU experts: what each setting does to kt-kernel's buffers, as measured.

kt-kernel 0.7.2 allocates its expert buffers with malloc-family calls and never madvises
them, so with no setting they land on 4 KiB pages whatever THP's mode or the hugepage pool.
glibc's `glibc.malloc.hugetlb` tunable changes that without touching kt-kernel:

- `thp` sets `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`: malloc madvises the chunks it maps,
  so THP (`madvise` or `always` mode) backs them. Measured: 71% of the expert bytes on THP,
  about 3% more memory (bench/results/hugepages-*.json).
- `hugetlb` sets `glibc.malloc.hugetlb=2097152`: malloc maps its chunks from the reserved
  2 MiB pool. Measured: each buffer is rounded up to whole pages, so the pool holds
  1.1-1.45x the expert bytes (1.41x at 1.6 GiB, 1.37x at 2.4 GiB, 1.15x at 8 GiB, 1.09x at
  42 GiB), and up to a quarter of the experts still land on 4 KiB pages (chunks glibc
  serves from its arenas): about 1.4x the memory of `off` in all. With the pool short,
  glibc silently uses 4 KiB pages.
  1 GiB pools are not used: glibc rounds every mapped chunk up to a whole page, and kt-kernel
  maps one chunk of a few MiB per expert matrix.

On the AMX host (16 cores, 42 GiB of MXFP4 experts, 13 threads) decode GB/s was the same
with every setting within run-to-run noise (38.6-42.0 GB/s); hugepages are therefore off by
default, and nothing should be reserved for them unless a measurement on the serving host
says otherwise (`bench/hugepages.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

from kthybrid_serve.host.host import HostFacts
from kthybrid_serve.host.hostfs import HostTree
from kthybrid_serve.units import MIB

HUGETLB_PAGE = 2 * MIB
TUNABLE = {"thp": "glibc.malloc.hugetlb=1", "hugetlb": f"glibc.malloc.hugetlb={HUGETLB_PAGE}"}
# Measured in the image and on the AMX host (bench/results/hugepages-*.json), tied by a test:
# Private_Hugetlb / expert bytes with the 2 MiB pool (1.093, 1.146, 1.373; 1.414 at the
# 1.6 GiB of tests/image/test_hugepages.py), rounded up.
HUGETLB_POOL_FACTOR = 1.45
# The shares on 4 KiB pages and on THP are each kernel's: plan/memory.py's KernelMemory.
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(host: HostFacts) -> str | None:
    """THP's mode on the host ('always', 'madvise', 'never'), None where the kernel has none."""
    text = HostTree(host.root).read(THP_ENABLED)
    if text is None or "[" not in text or "]" not in text:
        return None
    return text[text.index("[") + 1 : text.index("]")]


def pool_pages(host: HostFacts, page: int) -> tuple[int, int]:
    """(total, free) pages of one size on the memory nodes this process may use."""
    allowed = set(host.memory_nodes())
    total = free = 0
    for node in host.nodes:
        if node.node in allowed and page in node.hugepages:
            node_total, node_free = node.hugepages[page]
            total, free = total + node_total, free + node_free
    return total, free


def glibc_tunables(mode: str, environ: Mapping[str, str]) -> str | None:
    """GLIBC_TUNABLES for the server: the environment's own, with the mode's tunable set."""
    if mode == "off":
        return None
    kept = [
        part
        for part in environ.get("GLIBC_TUNABLES", "").split(":")
        if part and not part.startswith("glibc.malloc.hugetlb=")
    ]
    return ":".join([*kept, TUNABLE[mode]])


def hugetlb_pool_needed(expert_bytes: int) -> int:
    return int(expert_bytes * HUGETLB_POOL_FACTOR)
