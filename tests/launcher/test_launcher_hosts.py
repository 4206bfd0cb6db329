"""Plans for the issue's reference hosts, from real host trees and a V4-Flash shaped model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.launcher_fixtures import (
    AVX2_FLAGS,
    GB,
    H200,
    RTX4090,
    RTX5090,
    ZEN4_FLAGS,
    Result,
)

Cli = Callable[..., Result]


def plan(run_cli: Cli, host: Path, model: Path, *gpus: str, extra: tuple[str, ...] = ()) -> Result:
    args = ["plan", "--host-root", str(host), "--model", str(model), "--json", *extra]
    for gpu in gpus:
        args += ["--gpu", gpu]
    return run_cli(*args)


def test_tutorial_host_comes_out_close_to_the_hand_tuned_command(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    # 2-socket Xeon, SNC2 -> 4 NUMA nodes x 16 cores, SMT, 256 GB, one RTX 5090.
    host = make_host(sockets=2, nodes_per_socket=2, cores_per_node=16, mem_bytes=256 * GB)
    result = plan(run_cli, host, v4_flash, RTX5090)
    assert result.code == 0, result.err
    data = result.json
    # Hand-tuned: --kt-cpuinfer 60 --kt-threadpool-count 2 --kt-method MXFP4.
    assert data["kt_cpuinfer"] == 60
    assert data["kt_threadpool_count"] == 4
    assert data["kt_numa_nodes"] == [0, 1, 2, 3]
    assert data["threads_per_pool"] == [15, 15, 15, 15]
    assert data["kt_method"] == "MXFP4"
    assert 10 <= int(data["kt_num_gpu_experts"]) <= 40  # type: ignore[call-overload]
    reasons = {i["name"]: i["reason"] for i in data["items"]}  # type: ignore[union-attr,index]
    assert "leave the cores of node(s) 2,3 idle" in reasons["--kt-threadpool-count"]
    argv = data["argv"]
    assert argv[:2] == ["numactl", "--interleave=0,1,2,3"]  # type: ignore[index]
    for flag, value in (
        ("--context-length", "16384"),
        ("--chunked-prefill-size", "2048"),
        ("--max-prefill-tokens", "2048"),
        ("--max-running-requests", "2"),
        ("--watchdog-timeout", "1200"),
        ("--attention-backend", "flashinfer"),
        ("--mem-fraction-static", "0.85"),
        ("--cuda-graph-bs", "1"),
        ("--kt-gpu-prefill-token-threshold", "4096"),
    ):
        assert argv[argv.index(flag) + 1] == value  # type: ignore[union-attr,index]
    for flag in (
        "--disable-radix-cache",
        "--skip-server-warmup",
        "--disable-shared-experts-fusion",
        "--kt-enable-dynamic-expert-update",
    ):
        assert flag in argv  # type: ignore[operator]
    # sglang-kt registers DeepSeekV4Config itself: no repository code runs unless asked.
    assert "--trust-remote-code" not in argv  # type: ignore[operator]
    # The image owns the arch lists; the launcher owns SGLANG_DSV4_*.
    assert data["env"] == {
        "SGLANG_DSV4_MODE": "2604",
        "SGLANG_DSV4_2604_SUBMODE": "2604B",
    }


def test_eight_h200_hold_every_expert_so_the_plan_is_gpu_only(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    # 256/256 experts fit on 8 x 141 GB: no KT flags, no numactl, no host-RAM need,
    # so the same GPUs on a 128 GB host plan too.
    for mem in (2048 * GB, 128 * GB):
        host = make_host(sockets=2, nodes_per_socket=1, cores_per_node=48, mem_bytes=mem)
        result = plan(run_cli, host, v4_flash, *[H200] * 8)
        assert result.code == 0, result.err
        data = result.json
        assert data["tp_size"] == 8
        assert data["gpu_only"] is True
        assert data["kt_cpuinfer"] is None and data["host_memory_needed_bytes"] == 0
        argv = data["argv"]
        assert isinstance(argv, list) and argv[0] != "numactl"
        assert not [a for a in argv if str(a).startswith("--kt-")]
        reasons = {i["name"]: i["reason"] for i in data["items"]}  # type: ignore[union-attr,index]
        assert "GPU-only" in reasons["--kt-num-gpu-experts"]


def test_eight_h200_with_a_long_context_keep_some_experts_on_the_cpu(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(sockets=2, nodes_per_socket=1, cores_per_node=48, mem_bytes=2048 * GB)
    result = plan(
        run_cli, host, v4_flash, *[H200] * 8,
        extra=("--context-length", "262144", "--max-running-requests", "10"),
    )  # fmt: skip
    assert result.code == 0, result.err
    data = result.json
    assert data["gpu_only"] is False
    assert data["kt_threadpool_count"] == 2
    assert data["kt_cpuinfer"] == 86  # 96 cores - 8 schedulers - 2
    assert 0 < int(data["kt_num_gpu_experts"]) < 256  # type: ignore[call-overload]


def test_rtx4090_on_one_numa_amd_desktop_uses_one_pool_and_the_bf16_path(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(
        cores_per_node=16, mem_bytes=192 * GB, flags=ZEN4_FLAGS, model_name="AMD Ryzen 9 7950X"
    )
    result = plan(run_cli, host, v4_flash, RTX4090)
    assert result.code == 0, result.err
    data = result.json
    assert data["kt_threadpool_count"] == 1  # upstream's default 2 crashes here
    assert data["kt_numa_nodes"] == [0]
    assert data["kt_cpuinfer"] == 13
    assert data["kt_method"] == "MXFP4"
    reasons = {i["name"]: i["reason"] for i in data["items"]}  # type: ignore[union-attr,index]
    assert "AVX512-BF16 fast path" in reasons["--kt-method"]


def test_avx2_only_desktop_falls_back_to_the_avx2_kernel(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(cores_per_node=8, mem_bytes=256 * GB, flags=AVX2_FLAGS)
    result = plan(run_cli, host, v4_flash, RTX5090)
    assert result.code == 0, result.err
    reasons = {i["name"]: i["reason"] for i in result.json["items"]}  # type: ignore[union-attr,index]
    assert result.json["kt_method"] == "MXFP4"
    assert "AVX2 fallback" in reasons["--kt-method"]
    assert "keeps 20% over the expert bytes in RAM" in reasons["--kt-method"]
    assert result.json["kt_cpuinfer"] == 5


def test_the_avx2_kernels_memory_is_budgeted_where_avx512_would_fit(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    # kt-kernel's AVX2 MXFP4 kernel keeps 1.18x the expert bytes resident (measured on an
    # EPYC without AVX-512, bench/results/hugepages-avx2-epyc-2gib.json); the AVX512 kernel
    # 1.00x. The same 192 GB desktop holds V4-Flash's CPU experts with one and not the other.
    spec = {"cores_per_node": 8, "mem_bytes": 192 * GB}
    zen4 = plan(run_cli, make_host(**spec, flags=ZEN4_FLAGS), v4_flash, RTX5090)
    assert zen4.code == 0, zen4.err
    avx2 = plan(run_cli, make_host(**spec, flags=AVX2_FLAGS), v4_flash, RTX5090)
    assert avx2.code == 13, avx2.err
    assert "the CPU experts need 172.5 GiB of RAM (137.1 GiB of weights + overhead)" in avx2.err
    roomy_host = make_host(**{**spec, "mem_bytes": 256 * GB}, flags=AVX2_FLAGS)
    roomy = run_cli("plan", "--helm-values", "--host-root", str(roomy_host), "--model",
                    str(v4_flash), "--gpu", RTX5090)  # fmt: skip
    assert roomy.code == 0, roomy.err
    # The chart's budget and compose's limit carry the same 20%: 137.1 GiB x 1.20.
    assert "cpuExpertWeightsGi: 165" in roomy.out


def test_cgroup_v2_allowing_16_of_64_cpus_and_200gb(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    # 2 sockets x 16 cores, SMT: 64 CPUs; the container gets CPUs 0-15 (node 0) and 200 GB.
    host = make_host(
        sockets=2, cores_per_node=16, mem_bytes=512 * GB, cgroup_cpus="0-15",
        cgroup_memory=200 * GB,
    )  # fmt: skip
    result = plan(run_cli, host, v4_flash, RTX5090)
    assert result.code == 0, result.err
    data = result.json
    assert data["kt_numa_nodes"] == [0]
    assert data["kt_cpuinfer"] == 13
    assert data["host"]["cgroup_memory_limit"] == 200 * GB  # type: ignore[index]


def test_cgroup_v1_with_siblings_counts_physical_cores_only(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    # CPUs 0-7 and their siblings 32-39: 16 CPUs but 8 physical cores.
    host = make_host(
        sockets=2, cores_per_node=16, mem_bytes=512 * GB, cgroup="v1",
        cgroup_cpus="0-7,32-39", cgroup_memory=200 * GB, cgroup_path="/docker/abc",
    )  # fmt: skip
    result = plan(run_cli, host, v4_flash, RTX5090)
    assert result.code == 0, result.err
    assert result.json["kt_cpuinfer"] == 5
    assert result.json["host"]["cgroup_version"] == 1  # type: ignore[index]


def test_cpuset_split_over_two_nodes_uses_both_with_equal_pools(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(sockets=2, cores_per_node=16, mem_bytes=512 * GB, cgroup_cpus="8-23")
    result = plan(run_cli, host, v4_flash, RTX5090)
    assert result.code == 0, result.err
    assert result.json["kt_numa_nodes"] == [0, 1]
    assert result.json["threads_per_pool"] == [6, 6]


def test_mtp_switch_adds_the_eagle_flags(
    run_cli: Cli, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    host = make_host(sockets=2, nodes_per_socket=2, cores_per_node=16)
    result = plan(run_cli, host, v4_flash, RTX5090, extra=("--mtp",))
    argv = result.json["argv"]
    assert isinstance(argv, list)
    joined = " ".join(argv)
    assert "--speculative-algorithm EAGLE --speculative-num-steps 3" in joined
    assert "--speculative-eagle-topk 1 --speculative-num-draft-tokens 4" in joined
