"""Each bad case gives one line on stderr, no traceback, and its own exit code."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from kthybrid_serve.host.cgroup import CgroupLimits
from kthybrid_serve.host.host import Gpu, HostFacts
from kthybrid_serve.plan.targets import load_target_data
from kthybrid_serve.validate import check_driver

from tests.support.launcher_fixtures import (
    AVX2_FLAGS,
    GB,
    H200,
    RTX5090,
    ModelSpec,
    Result,
    build_amx_weights,
    build_model,
)

Cli = Callable[..., Result]


def refused(result: Result, code: int, *words: str) -> None:
    assert result.code == code, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("kthybrid-serve: error: ")
    assert "Traceback" not in result.err
    for word in words:
        assert word in lines[0]


@pytest.fixture
def tutorial_host(make_host: Callable[..., Path]) -> Path:
    return make_host(sockets=2, nodes_per_socket=2, cores_per_node=16, mem_bytes=256 * GB)


@pytest.fixture
def cpu_model(tmp_path: Path) -> Path:
    """V4-Flash's experts (137 GiB) do not fit on one GPU: some stay on the CPU."""
    return build_model(tmp_path / "cpu-moe", ModelSpec(shards=3, nextn=0))


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    return build_model(tmp_path / "tiny-moe", ModelSpec(layers=4, experts=16, shards=3, nextn=0))


def test_no_gpu_is_one_line_with_the_agreed_words(
    run_cli: Cli, tutorial_host: Path, small_model: Path
) -> None:
    result = run_cli("plan", "--host-root", str(tutorial_host), "--model", str(small_model))
    refused(result, 10, "no NVIDIA GPU found")


def test_serve_without_gpu_refuses_before_loading(
    run_cli: Cli, tutorial_host: Path, small_model: Path
) -> None:
    result = run_cli("--host-root", str(tutorial_host), "--model", str(small_model))
    refused(result, 10, "no NVIDIA GPU found")


def test_sm120_image_on_h200_names_the_sm90_image(
    run_cli: Cli, tutorial_host: Path, small_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KTHYBRID_TARGET", "sm120")
    monkeypatch.setenv("KTHYBRID_TARGET_CC", "12.0")
    result = run_cli(
        "plan", "--host-root", str(tutorial_host), "--model", str(small_model), "--gpu", H200
    )
    refused(result, 11, "kthybrid:sm90", "9.0")


def test_old_driver_is_refused() -> None:
    gpu = Gpu(0, "NVIDIA H200", 141 * GB, (9, 0), "550.54.15", 12040)
    facts = HostFacts(
        root="/", cpus=(), nodes=(), allowed_cpus=frozenset({0}), mem_total_bytes=GB,
        mem_available_bytes=GB, cgroup=CgroupLimits(), shm_bytes=GB, memlock_bytes=None,
        isa_flags=frozenset(), cpu_model="cpu", gpus=(gpu,), gpu_source="nvml",
    )  # fmt: skip
    check = check_driver(facts, load_target_data())
    assert check.error is not None and check.error.exit_code == 12
    assert "550.54.15" in check.message and "12.8" in check.message
    newer = replace(
        facts, gpus=(replace(gpu, driver_version="580.159.04", cuda_driver_version=13000),)
    )
    assert check_driver(newer, load_target_data()).status == "ok"


def test_too_little_ram_says_needed_and_found(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(cores_per_node=16, mem_bytes=128 * GB)
    result = run_cli("plan", "--host-root", str(host), "--model", str(v4_flash), "--gpu", RTX5090)
    refused(result, 13, "need 151.9 GiB", "available")


def test_cgroup_limit_below_the_experts_is_refused(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(cores_per_node=16, mem_bytes=512 * GB, cgroup_memory=100 * GB)
    result = run_cli("plan", "--host-root", str(host), "--model", str(v4_flash), "--gpu", RTX5090)
    refused(result, 14, "cgroup memory limit allows 93.1 GiB", "hostMemory.limitGi")


def test_amxint4_weights_on_a_cpu_without_amx_name_the_method_that_works(
    run_cli: Cli, make_host: Callable[..., Path], cpu_model: Path, tmp_path: Path
) -> None:
    host = make_host(cores_per_node=8, flags=AVX2_FLAGS)
    weights = build_amx_weights(tmp_path / "amx", layers=43, numa=1)
    result = run_cli(
        "plan", "--host-root", str(host), "--model", str(cpu_model), "--gpu", RTX5090,
        "--kt-weight-path", str(weights),
    )  # fmt: skip
    refused(result, 15, "AMX", "--kt-method MXFP4")


def test_amx_weights_converted_for_four_nodes_set_four_pools(
    run_cli: Cli, tutorial_host: Path, cpu_model: Path, tmp_path: Path
) -> None:
    weights = build_amx_weights(tmp_path / "amx", layers=43, numa=4)
    result = run_cli(
        "plan", "--host-root", str(tutorial_host), "--model", str(cpu_model), "--gpu", RTX5090,
        "--kt-weight-path", str(weights), "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert result.json["kt_method"] == "AMXINT4"
    assert result.json["kt_threadpool_count"] == 4
    assert "SGLANG_DSV4_2604_SUBMODE" not in result.json["env"]  # type: ignore[operator]


def test_small_shm_is_refused(
    run_cli: Cli, make_host: Callable[..., Path], small_model: Path
) -> None:
    host = make_host(shm_size="65536k")
    result = run_cli("plan", "--host-root", str(host), "--model", str(small_model), "--gpu", H200)
    refused(result, 16, "/dev/shm is 64 MiB", "--shm-size")


def test_missing_shard_is_named(run_cli: Cli, tutorial_host: Path, small_model: Path) -> None:
    (small_model / "model-00002-of-00003.safetensors").unlink()
    result = run_cli(
        "plan", "--host-root", str(tutorial_host), "--model", str(small_model), "--gpu", H200
    )
    refused(result, 17, "model-00002-of-00003.safetensors")


def test_truncated_shard_is_named(run_cli: Cli, tutorial_host: Path, small_model: Path) -> None:
    shard = small_model / "model-00003-of-00003.safetensors"
    with shard.open("r+b") as handle:
        handle.truncate(shard.stat().st_size - 1)
    result = run_cli(
        "plan", "--host-root", str(tutorial_host), "--model", str(small_model), "--gpu", H200
    )
    refused(result, 17, "model-00003-of-00003.safetensors")


def test_hugepages_required_but_not_reserved(
    run_cli: Cli, tutorial_host: Path, cpu_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KTHYBRID_HUGEPAGES", "true")
    result = run_cli(
        "plan", "--host-root", str(tutorial_host), "--model", str(cpu_model), "--gpu", H200
    )
    refused(result, 18, "none are reserved")


def test_two_pools_on_a_one_node_host_are_refused(
    run_cli: Cli, make_host: Callable[..., Path], cpu_model: Path
) -> None:
    host = make_host(cores_per_node=16)
    result = run_cli(
        "plan", "--host-root", str(host), "--model", str(cpu_model), "--gpu", H200,
        "--kt-threadpool-count", "2",
    )  # fmt: skip
    refused(result, 20, "1 NUMA node")


def test_cpuinfer_on_hyperthreads_is_refused(
    run_cli: Cli, make_host: Callable[..., Path], cpu_model: Path
) -> None:
    host = make_host(cores_per_node=16)
    result = run_cli(
        "plan", "--host-root", str(host), "--model", str(cpu_model), "--gpu", H200,
        "--kt-cpuinfer", "32",
    )  # fmt: skip
    refused(result, 20, "16 allowed physical cores")


def test_too_many_gpu_experts_are_refused(
    run_cli: Cli, tutorial_host: Path, v4_flash: Path
) -> None:
    result = run_cli(
        "plan", "--host-root", str(tutorial_host), "--model", str(v4_flash), "--gpu", RTX5090,
        "--kt-num-gpu-experts", "200",
    )  # fmt: skip
    refused(result, 19, "at most")


def test_bad_env_value_is_a_usage_error(
    run_cli: Cli, tutorial_host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KTHYBRID_KT_CPUINFER", "many")
    result = run_cli("plan", "--host-root", str(tutorial_host))
    assert result.code == 2
    assert "KTHYBRID_KT_CPUINFER" in result.err


def test_doctor_reports_every_check_and_exits_with_the_first_failure(
    run_cli: Cli, make_host: Callable[..., Path], small_model: Path
) -> None:
    host = make_host(shm_size="65536k", memlock="8388608")
    result = run_cli(
        "doctor", "--host-root", str(host), "--model", str(small_model), "--gpu", H200, "--json"
    )
    checks = {c["name"]: c for c in json.loads(result.out)}
    assert result.code == 16
    assert checks["shm"]["status"] == "fail"
    assert checks["memlock"]["status"] == "warn"
    assert checks["model"]["status"] == "ok"
    assert checks["plan"]["status"] == "ok"
    assert checks["arch"]["status"] == "skip"
