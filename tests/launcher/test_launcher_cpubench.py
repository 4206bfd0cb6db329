"""The bench's arithmetic and choices, without kt-kernel: layouts, sizing, the ceiling, the table.

What needs kt-kernel (the runs, the JSON a real bench prints) is checked in the image
(tests/image/test_bench.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kthybrid_serve.cpubench.bandwidth import HostCpus, host_cpus, read_bandwidth
from kthybrid_serve.cpubench.plot import render_table
from kthybrid_serve.cpubench.sweep import (
    TUTORIAL_CORES,
    TUTORIAL_THREADS,
    PoolLayout,
    candidates,
    size_working_set,
)
from kthybrid_serve.errors import BenchError
from kthybrid_serve.host.host import read_host
from kthybrid_serve.model.experts import ExpertShape, bytes_per_expert, decode_ceiling
from kthybrid_serve.units import GIB, MIB

V4_FLASH = ExpertShape("DeepSeek-V4-Flash", 4096, 2048, 6, 256, 43)


def cpus(nodes: int, cores: int, logical: int | None = None, llc: int = 300 * MIB) -> HostCpus:
    by_node = {n: tuple(range(n * cores, (n + 1) * cores)) for n in range(nodes)}
    return HostCpus(by_node, logical or nodes * cores, llc, 128 * GIB)


def layouts(found: list[Any]) -> dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[str, ...]]:
    return {(c.layout.nodes, c.layout.per_pool): c.labels for c in found}


def test_mxfp4_expert_bytes_are_the_checkpoints_nibbles_plus_one_scale_byte_per_32() -> None:
    # DeepSeek-V4-Flash: gate, up, down of 2048x4096 E2M1 values, E8M0 scale per 32.
    assert bytes_per_expert("MXFP4", 4096, 2048) == 3 * (2048 * 4096 // 2 + 2048 * 4096 // 32)
    assert bytes_per_expert("AMXINT4", 4096, 2048) == 3 * 2048 * 4096 // 2 + 4 * (2 * 2048 + 4096)
    assert bytes_per_expert("BF16", 4096, 2048) == 3 * 2048 * 4096 * 2


def test_kt_kernels_split_gives_the_first_pools_the_remainder() -> None:
    assert PoolLayout.split(15, (0, 1)).per_pool == (8, 7)
    assert PoolLayout.split(1, (0, 1)).per_pool == (1, 0)


def test_layouts_on_the_amx_host_cover_plan_sweep_tutorial_and_upstream() -> None:
    host = cpus(nodes=1, cores=16)
    found = layouts(candidates(PoolLayout((0,), (13,)), host))
    assert "plan" in found[((0,), (13,))]
    assert {per_pool[0] for nodes, per_pool in found if nodes == (0,)} == set(range(8, 17)) - {9}
    assert max(per_pool[0] for nodes, per_pool in found if nodes == (0,)) == 16  # never above cores
    tutorial = round(TUTORIAL_THREADS / TUTORIAL_CORES * 16)
    assert any(
        lab.startswith("tutorial")
        for lab in found[((0, 1), PoolLayout.split(tutorial, (0, 1)).per_pool)]
    )
    assert any(
        lab.startswith("upstream") for lab in found[((0, 1), (6, 6))]
    )  # int(0.8 x 16), 2 pools


def test_every_sweep_layout_keeps_the_plans_nodes_and_stays_within_their_cores() -> None:
    host = cpus(nodes=4, cores=16, logical=128)
    plan = PoolLayout((0, 1, 2, 3), (15, 15, 15, 15))
    for candidate in candidates(plan, host):
        if "sweep" in candidate.labels:
            assert candidate.layout.nodes == plan.nodes
            assert 1 <= min(candidate.layout.per_pool) <= max(candidate.layout.per_pool) <= 16


def test_a_layout_on_nodes_the_host_lacks_says_so() -> None:
    found = candidates(PoolLayout((0,), (13,)), cpus(nodes=1, cores=16))
    upstream = next(c for c in found if c.labels[0].startswith("upstream"))
    assert "node(s) 1 have no allowed cores" in upstream.note


def test_working_set_is_far_above_the_llc_and_a_whole_number_of_layers() -> None:
    sizing = size_working_set(V4_FLASH, "MXFP4", cpus(1, 16, llc=300 * MIB))
    assert sizing.loaded_bytes >= 16 * 300 * MIB
    assert sizing.experts <= V4_FLASH.experts
    assert sizing.loaded_bytes == sizing.layers * sizing.experts * bytes_per_expert(
        "MXFP4", 4096, 2048
    )


def test_a_working_set_the_memory_cannot_hold_is_refused_with_the_figures() -> None:
    small = HostCpus({0: (0, 1)}, 2, 300 * MIB, 8 * GIB)
    with pytest.raises(BenchError, match=r"needs [0-9.]+ GiB .* of the 8.0 GiB available"):
        size_working_set(V4_FLASH, "MXFP4", small)


def test_decode_ceiling_is_bandwidth_over_active_expert_bytes_on_the_cpu() -> None:
    per_token = 43 * 6 * bytes_per_expert("MXFP4", 4096, 2048)
    assert decode_ceiling(50.0, V4_FLASH, "MXFP4") == pytest.approx(50e9 / per_token)
    # Half the experts on the GPU: half of each token's experts cost the CPU nothing.
    assert decode_ceiling(50.0, V4_FLASH, "MXFP4", 128) == pytest.approx(2 * 50e9 / per_token)
    assert math.isinf(decode_ceiling(50.0, V4_FLASH, "MXFP4", 256))


def test_read_bandwidth_measures_every_thread_it_starts() -> None:
    allowed = sorted(os.sched_getaffinity(0))[:2]
    total, per_node = read_bandwidth({0: tuple(allowed)}, 64 * MIB, repeats=3)
    assert total == per_node[0]
    assert total.threads == len(allowed)
    assert len(total.gbps_repeats) == 3
    assert all(rate > 0 for rate in total.gbps_repeats)
    assert total.gbps == sorted(total.gbps_repeats)[1]  # the median


def test_host_cpus_counts_one_cpu_per_physical_core_and_reads_the_llc(
    make_host: Callable[..., Path],
) -> None:
    l3 = {
        f"/sys/devices/system/cpu/cpu{cpu}/cache/index3/{name}": value
        for cpu in range(32)
        for name, value in (
            ("level", "3\n"),
            ("type", "Unified\n"),
            ("size", "30M\n"),
            ("shared_cpu_list", "0-7,16-23\n" if cpu % 16 < 8 else "8-15,24-31\n"),
        )
    }
    root = make_host(sockets=2, cores_per_node=8, smt=True, extra=l3)
    facts = host_cpus(read_host(str(root), ["NVIDIA H200,141GiB,9.0"]))
    assert facts.cores_by_node == {0: 8, 1: 8}
    assert facts.logical_cpus == 32
    assert facts.llc_bytes == 2 * 30 * MIB  # two distinct L3s


def test_host_without_cache_information_is_refused(make_host: Callable[..., Path]) -> None:
    root = make_host()
    with pytest.raises(BenchError, match="cannot read the CPU caches"):
        host_cpus(read_host(str(root), ["NVIDIA H200,141GiB,9.0"]))


def test_table_names_plan_best_and_failed_runs() -> None:
    runs = [
        {"threads": 13, "pools": 1, "threads_per_pool": [13], "numa_nodes": [0],
         "labels": ["plan"], "note": "", "gbps": 43.0},
        {"threads": 15, "pools": 1, "threads_per_pool": [15], "numa_nodes": [0],
         "labels": ["sweep"], "note": "", "gbps": 49.2},
        {"threads": 1, "pools": 2, "threads_per_pool": [1, 0], "numa_nodes": [0, 1],
         "labels": ["upstream"], "note": "", "gbps": None, "error": "not run: a pool would get 0"},
    ]  # fmt: skip
    result = {
        "method": "MXFP4", "moe_class": "AMXFP4_KGroup_MOE", "cpu_variant": "amx",
        "shape": V4_FLASH.to_json(), "working_set_bytes": 6 * GIB, "layers_loaded": 2,
        "experts_loaded_per_layer": 256, "bytes_per_expert": 12 * MIB, "llc_bytes": 300 * MIB,
        "bandwidth_gbps": 109.6,
        "bandwidth_per_node": [{"nodes": [0], "threads": 16, "gbps": 109.6}],
        "runs": runs, "plan_threads": 13, "plan_pools": 1, "plan_gbps": 43.0, "plan_error": None,
        "plan_vs_best": 0.874, "best_threads": 15, "best_pools": 1, "best_gbps": 49.2,
        "best_vs_bandwidth": 0.449,
    }  # fmt: skip
    table = render_table(result)
    assert "plan: 13 threads in 1 pool(s), 43.0 GB/s = 0.87 of the best" in table
    assert "best: 15 threads in 1 pool(s), 49.2 GB/s = 0.45 of the read bandwidth" in table
    assert "not run: a pool would get 0" in table
