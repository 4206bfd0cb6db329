"""KTHYBRID_HUGEPAGES: the glibc tunable it sets, the checks against THP and the pool, the figures.

Where the buffers really land with each setting is checked in the image
(tests/image/test_hugepages.py); the constants here are tied to the measured results.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kthybrid_serve.plan.hugepages import HUGETLB_POOL_FACTOR, THP_ENABLED
from kthybrid_serve.plan.memory import (
    AVX2_MXFP4_KERNEL_MEMORY,
    DEFAULT_KERNEL_MEMORY,
    KernelMemory,
)
from kthybrid_serve.plan.method import VARIANT_FLAGS, avx2_mxfp4_kernel, kernel_memory

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
H200 = "NVIDIA H200,143771MiB,9.0"
RTX5090 = "NVIDIA GeForce RTX 5090,32607MiB,12.0"


def measured(variant: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted(RESULTS.glob("hugepages-*.json")):
        for entry in json.loads(path.read_text())["variants"]:
            if entry["name"] == variant and not entry.get("error"):
                found.append(entry)
    assert found, f"no measured {variant!r} in {RESULTS}/hugepages-*.json"
    return found


def avx2_mxfp4(entry: dict[str, Any]) -> bool:
    """Whether the plan gives this run's kt-kernel variant the AVX2 MXFP4 kernel."""
    return avx2_mxfp4_kernel(frozenset(VARIANT_FLAGS[entry["cpu_variant"]]), "MXFP4")


def kernel_of(entry: dict[str, Any]) -> KernelMemory:
    """The measured memory the plan gives this run's kt-kernel variant."""
    return kernel_memory(frozenset(VARIANT_FLAGS[entry["cpu_variant"]]), "MXFP4")


def test_the_pool_factor_covers_every_measured_hugetlb_run() -> None:
    for entry in measured("hugetlb=2, 2 MiB pool"):
        assert entry["private_hugetlb_bytes"] <= HUGETLB_POOL_FACTOR * entry["loaded_bytes"]
        share = kernel_of(entry).hugetlb_small_share
        assert entry["rss_growth_bytes"] <= share * entry["loaded_bytes"]


def test_the_plan_names_the_kernel_kt_kernel_picked_in_every_measured_run() -> None:
    # Each AVX-512 build (base, vnni, vbmi, bf16, amx) picks AMXFP4_KGroup_MOE; avx2 its own.
    seen = set()
    for path in sorted(RESULTS.glob("hugepages-*.json")):
        for entry in json.loads(path.read_text())["variants"]:
            if entry.get("moe_class"):
                assert avx2_mxfp4(entry) == (entry["moe_class"] == "AVX2MXFP4_MOE"), entry
                seen.add(entry["cpu_variant"])
    assert seen >= set(VARIANT_FLAGS)


def test_the_expert_overhead_covers_every_measured_run_on_small_pages() -> None:
    # With no hugepages the whole resident growth is the experts and the kernel's buffers.
    kernels = set()
    for entry in measured("thp-never"):
        overhead = kernel_of(entry).overhead
        growth = entry["rss_growth_bytes"] / entry["loaded_bytes"]
        assert growth <= 1 + overhead, entry["cpu_variant"]
        # and not far below it: a constant much above what was measured is a guess
        assert growth >= 1 + overhead - 0.05, entry["cpu_variant"]
        kernels.add(avx2_mxfp4(entry))
    assert kernels == {True, False}  # both kernels measured
    assert AVX2_MXFP4_KERNEL_MEMORY.overhead > DEFAULT_KERNEL_MEMORY.overhead


def test_the_thp_budget_covers_every_measured_thp_run() -> None:
    for entry in measured("thp-madvise + hugetlb=1"):
        kernel = kernel_of(entry)
        budget = kernel.ordinary_share("thp") * (1 + kernel.overhead)
        assert entry["rss_growth_bytes"] <= budget * entry["loaded_bytes"], entry["cpu_variant"]


def test_the_thp_share_is_what_was_measured() -> None:
    for entry in measured("thp-madvise + hugetlb=1"):
        assert entry["on_thp"] == pytest.approx(kernel_of(entry).thp_share, abs=0.02)


def test_with_no_setting_nothing_lands_on_hugepages() -> None:
    for entry in measured("thp-madvise"):
        assert entry["lands_on"] == "4 KiB pages"


@pytest.fixture
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.launcher_fixtures import ModelSpec, build_model

    return build_model(tmp_path_factory.mktemp("m") / "moe", ModelSpec(layers=8, experts=64))


def plan(run_cli: Callable[..., Any], host: Path, model: Path, *extra: str) -> Any:
    return run_cli("plan", "--host-root", str(host), "--model", str(model), "--gpu", RTX5090,
                   "--kt-num-gpu-experts", "8", "--json", *extra)  # fmt: skip


def thp(mode: str) -> dict[str, str]:
    modes = " ".join(f"[{m}]" if m == mode else m for m in ("always", "madvise", "never"))
    return {THP_ENABLED: modes + "\n"}


def test_thp_sets_the_glibc_tunable_and_keeps_others(
    run_cli: Callable[..., Any],
    make_host: Callable[..., Path],
    model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0:glibc.pthread.rseq=0")
    result = plan(run_cli, make_host(extra=thp("madvise")), model, "--hugepages", "thp")
    assert result.code == 0, result.err
    assert result.json["env"]["GLIBC_TUNABLES"] == "glibc.pthread.rseq=0:glibc.malloc.hugetlb=1"


def test_thp_on_a_host_where_thp_is_never_is_refused(
    run_cli: Callable[..., Any], make_host: Callable[..., Path], model: Path
) -> None:
    result = plan(run_cli, make_host(extra=thp("never")), model, "--hugepages", "thp")
    assert result.code == 18, result.out
    assert "this host's is never" in result.err


def test_hugetlb_uses_the_2mib_pool_with_the_measured_margin(
    run_cli: Callable[..., Any], make_host: Callable[..., Path], model: Path
) -> None:
    roomy = make_host(hugepages_2m=6144, extra=thp("madvise"))  # 12 GiB
    result = plan(run_cli, roomy, model, "--hugepages", "hugetlb")
    assert result.code == 0, result.err
    assert result.json["env"]["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=2097152"
    experts = result.json["cpu_expert_bytes"]
    assert HUGETLB_POOL_FACTOR * experts <= 6144 * 2 * 1024**2
    # Ordinary RAM is then needed only for the share that stays on 4 KiB pages.
    off = plan(run_cli, roomy, model)
    assert result.json["host_memory_needed_bytes"] < off.json["host_memory_needed_bytes"]


def test_hugetlb_with_only_1gib_pages_is_refused_with_the_count_to_reserve(
    run_cli: Callable[..., Any], make_host: Callable[..., Path], model: Path
) -> None:
    result = plan(run_cli, make_host(hugepages_1g=16), model, "--hugepages", "true")
    assert result.code == 18, result.out
    assert "1 GiB pages are not used" in result.err
    assert "none are reserved" in result.err


def test_doctor_reports_thp_mode_and_pools_and_warns_about_unused_reservations(
    run_cli: Callable[..., Any], make_host: Callable[..., Path], model: Path
) -> None:
    host = make_host(hugepages_2m=1024, extra=thp("madvise"))
    result = run_cli("doctor", "--host-root", str(host), "--model", str(model), "--gpu", RTX5090,
                     "--kt-num-gpu-experts", "8", "--json")  # fmt: skip
    check = next(c for c in json.loads(result.out) if c["name"] == "hugepages")
    assert check["status"] == "warn"
    assert "THP madvise" in check["message"]
    assert "2 MiB pool 1024/1024 pages free" in check["message"]
    assert f"{1024 * 2 / 1024:.1f} GiB reserved as hugepages that nothing maps" in check["message"]
