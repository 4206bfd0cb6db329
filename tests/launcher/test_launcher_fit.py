"""Plans that fit the box they run in: CPU quotas, isolated CPUs, memory nodes, limits, GPUs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.launcher_fixtures import GB, GIB, H200, RTX4090, RTX5090, Result

Cli = Callable[..., Result]


def plan_json(run_cli: Cli, host: Path, model: Path, *extra: str) -> dict[str, object]:
    result = run_cli("plan", "--host-root", str(host), "--model", str(model), *extra, "--json")
    assert result.code == 0, result.err
    return result.json


def reasons(data: dict[str, object]) -> dict[str, str]:
    items = data["items"]
    assert isinstance(items, list)
    return {i["name"]: i["reason"] for i in items}


def refusal(result: Result, code: int, *words: str) -> str:
    assert result.code == code, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# -- CPU budget ---------------------------------------------------------------------


def test_a_v2_cpu_quota_caps_the_threads_and_is_named(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    # A Guaranteed pod on a 128-core node without the static CPU manager: the whole
    # cpuset, but cpu.max grants 16 CPUs.
    host = make_host(sockets=2, nodes_per_socket=4, cores_per_node=16,
                     mem_bytes=1024 * GB, cpu_quota=(1600000, 100000))  # fmt: skip
    data = plan_json(run_cli, host, v4_flash, "--gpu", RTX5090)
    assert data["kt_cpuinfer"] <= 16 - 3  # type: ignore[operator]
    why = reasons(data)["--kt-cpuinfer"]
    assert "cgroup CPU quota 1600000/100000 us = 16 CPUs" in why
    assert data["host"]["cgroup_cpu_quota_cpus"] == 16  # type: ignore[index]


def test_a_v1_cfs_quota_caps_the_threads_too(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(sockets=2, cores_per_node=32, mem_bytes=512 * GB, cgroup="v1",
                     cgroup_path="/kubepods/pod1", cpu_quota=(800000, 100000))  # fmt: skip
    data = plan_json(run_cli, host, v4_flash, "--gpu", RTX5090)
    assert data["kt_cpuinfer"] == 8 - 3
    assert "cpu.cfs_quota_us" in reasons(data)["--kt-cpuinfer"]


def test_more_threads_than_the_quota_are_refused(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(cores_per_node=64, cpu_quota=(1600000, 100000))
    result = run_cli("plan", "--host-root", str(host), "--model", str(v4_flash),
                     "--gpu", RTX5090, "--kt-cpuinfer", "40")  # fmt: skip
    refusal(result, 20, "CPU quota of 16 CPUs", "throttled")


def test_isolated_and_nohz_full_cpus_are_not_worker_cores(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(cores_per_node=16, smt=False, isolated="12-13", nohz_full="14-15")
    data = plan_json(run_cli, host, v4_flash, "--gpu", RTX5090)
    assert data["kt_cpuinfer"] == 12 - 3
    assert data["host"]["isolated_cpus"] == "12-15"  # type: ignore[index]
    assert data["host"]["allowed_cpus"] == "0-11"  # type: ignore[index]


def test_offline_cpus_are_not_counted(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(cores_per_node=16, smt=False,
                     extra={"/sys/devices/system/cpu/online": "0-7\n"})  # fmt: skip
    data = plan_json(run_cli, host, v4_flash, "--gpu", RTX5090)
    assert data["kt_cpuinfer"] == 8 - 3


# -- memory budget -----------------------------------------------------------------


def test_memory_nodes_from_cpuset_mems_bound_the_ram_check(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    # 2 nodes of 128 GiB; the cgroup may allocate on node 1 only: ~152 GiB cannot fit.
    host = make_host(sockets=2, cores_per_node=16, mem_bytes=256 * GIB, cgroup_mems="1")
    result = run_cli("plan", "--host-root", str(host), "--model", str(v4_flash), "--gpu", RTX5090)
    refusal(result, 13, "need 151.9 GiB", "memory nodes limited to 1 by cgroup cpuset.mems",
            "256.0 GiB total")  # fmt: skip


def test_memory_high_is_a_limit(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(cores_per_node=16, mem_bytes=512 * GB, memory_high=120 * GIB)
    result = run_cli("plan", "--host-root", str(host), "--model", str(v4_flash), "--gpu", RTX5090)
    refusal(result, 14, "memory.high allows 120.0 GiB", "need 151.9 GiB")


def test_reserved_hugepages_are_shown_when_ram_is_short(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    # 256 GiB host that reserved 160 x 1 GiB hugepages nothing maps.
    host = make_host(cores_per_node=16, mem_bytes=256 * GIB, hugepages_1g=160)
    result = run_cli("plan", "--host-root", str(host), "--model", str(v4_flash), "--gpu", RTX5090)
    refusal(result, 13, "160.0 GiB reserved as hugepages", "256.0 GiB total", "need 151.9 GiB")


def test_interleave_covers_only_nodes_with_expert_threads(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    # Two CPU nodes plus two CPU-less CXL memory nodes.
    host = make_host(sockets=2, cores_per_node=16, mem_bytes=512 * GB, cpuless_nodes=2)
    data = plan_json(run_cli, host, v4_flash, "--gpu", RTX5090)
    argv = data["argv"]
    assert isinstance(argv, list)
    assert argv[:2] == ["numactl", "--interleave=0,1"]
    assert "CXL" in reasons(data)["numactl"]
    asked = plan_json(run_cli, host, v4_flash, "--gpu", RTX5090, "--numa-policy", "interleave-all")
    assert asked["argv"][:2] == ["numactl", "--interleave=all"]  # type: ignore[index]


def test_threads_on_nodes_memory_may_not_come_from_are_refused(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(sockets=2, cores_per_node=16, mem_bytes=1024 * GB, cgroup_cpus="0-15",
                     cgroup_mems="1")  # fmt: skip
    result = run_cli("plan", "--host-root", str(host), "--model", str(v4_flash), "--gpu", RTX5090)
    refusal(result, 20, "cpuset.mems", "KTHYBRID_NUMA_POLICY=none")


# -- GPU budget --------------------------------------------------------------------


def test_mtp_puts_the_drafts_routed_experts_on_the_gpu(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(cores_per_node=16, mem_bytes=512 * GB)
    plain = plan_json(run_cli, host, v4_flash, "--gpu", RTX4090)
    mtp = plan_json(run_cli, host, v4_flash, "--gpu", RTX4090, "--mtp")
    labels = {b["label"]: b for b in mtp["gpu_budget"]}  # type: ignore[union-attr,index]
    draft_experts = -labels["MTP draft experts"]["bytes"]
    assert draft_experts == 256 * 13_369_344  # the NextN layer's 256 MXFP4 experts
    # 3.19 GiB less on a 24 GiB card: about 6 fewer experts per layer than without MTP.
    assert plain["kt_num_gpu_experts"] - mtp["kt_num_gpu_experts"] >= 6  # type: ignore[operator]
    # ... and they are not counted in host memory.
    assert mtp["cpu_expert_bytes"] == plain["cpu_expert_bytes"]


def test_helm_values_are_the_charts_defaults_for_v4_flash(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    import yaml

    host = make_host(cores_per_node=16, mem_bytes=512 * GB)
    result = run_cli("plan", "--host-root", str(host), "--model", str(v4_flash),
                     "--gpu", RTX5090, "--helm-values")  # fmt: skip
    assert result.code == 0, result.err
    printed = yaml.safe_load(result.out)["hostMemory"]
    chart = Path(__file__).parents[2] / "helm" / "kthybrid" / "values.yaml"
    defaults = yaml.safe_load(chart.read_text())["hostMemory"]
    for key, value in printed.items():
        assert defaults[key] == value, (key, defaults[key], value)


# -- images: what a path needs at run time ------------------------------------------


def test_hopper_without_flash_mla_is_refused_at_plan_time(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KTHYBRID_TARGET", "sm90")
    host = make_host(cores_per_node=16, mem_bytes=512 * GB)
    result = run_cli("plan", "--host-root", str(host), "--model", str(v4_flash), "--gpu", H200)
    refusal(result, 25, "flash_mla", "sm89, sm100, sm120")
    doctor = run_cli("doctor", "--host-root", str(host), "--model", str(v4_flash),
                     "--gpu", H200, "--json")  # fmt: skip
    checks = {c["name"]: c for c in json.loads(doctor.out)}
    assert checks["plan"]["status"] == "fail" and checks["plan"]["exit_code"] == 25
    assert doctor.code == 25


def test_an_image_without_nvcc_refuses_deepseek_v4(
    run_cli: Cli,
    make_host: Callable[..., Path],
    v4_flash: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("KTHYBRID_TARGET", "sm120")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    host = make_host(cores_per_node=16, mem_bytes=512 * GB)
    result = run_cli("plan", "--host-root", str(host), "--model", str(v4_flash), "--gpu", RTX5090)
    refusal(result, 23, "no nvcc", "deepseek_v4 model code", "--cuda-toolchain-image")


def test_an_image_with_nvcc_passes_and_names_what_it_checked(
    run_cli: Cli,
    make_host: Callable[..., Path],
    v4_flash: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # An executable named nvcc on PATH is what the check looks for (shutil.which).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    nvcc = bin_dir / "nvcc"
    nvcc.write_text("#!/bin/sh\nexit 0\n")
    nvcc.chmod(0o755)
    monkeypatch.setenv("KTHYBRID_TARGET", "sm120")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    host = make_host(cores_per_node=16, mem_bytes=512 * GB)
    data = plan_json(run_cli, host, v4_flash, "--gpu", RTX5090)
    why = reasons(data)["runtime needs"]
    assert str(nvcc) in why and "tilelang (nsa indexer)" in why
    # Chunks of 2048 never reach the 4096 threshold: Marlin's full-GPU prefill never runs.
    assert "marlin" not in why
    long_chunks = plan_json(run_cli, host, v4_flash, "--gpu", RTX5090,
                            "--chunked-prefill-size", "4096")  # fmt: skip
    assert "marlin (mxfp4 prefill)" in reasons(long_chunks)["runtime needs"]


# -- JSON ---------------------------------------------------------------------------


def test_json_refusals_print_one_json_object(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(cores_per_node=16, mem_bytes=128 * GB)
    result = run_cli("plan", "--host-root", str(host), "--model", str(v4_flash),
                     "--gpu", RTX5090, "--json")  # fmt: skip
    assert result.code == 13
    assert json.loads(result.out) == {
        "error": {"code": 13, "message": result.err.strip().removeprefix("kthybrid-serve: error: ")}
    }
    usage = run_cli("plan", "--port", "99999", "--json")
    assert json.loads(usage.out)["error"]["code"] == 2


def test_the_downloaded_revision_is_shown(
    run_cli: Cli, make_host: Callable[..., Path], tmp_path: Path
) -> None:
    from tests.support.launcher_fixtures import ModelSpec, build_model

    model = build_model(tmp_path / "m", ModelSpec(layers=4, experts=16, shards=2, nextn=0))
    meta = model / ".cache" / "huggingface" / "download"
    meta.mkdir(parents=True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    for name in ("config.json", "model-00001-of-00002.safetensors"):
        (meta / f"{name}.metadata").write_text(f'{commit}\n"etag"\n1700000000.0\n')
    host = make_host(cores_per_node=16, mem_bytes=512 * GB)
    data = plan_json(run_cli, host, model, "--gpu", RTX5090)
    assert data["model"]["revision"] == commit  # type: ignore[index]
    assert reasons(data)["model revision"] == "recorded by `hf download`"
