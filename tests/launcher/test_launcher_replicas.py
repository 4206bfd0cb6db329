"""`plan --replicas N`: one host split into servers with disjoint GPUs, NUMA nodes, CPUs, ports."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kthybrid_serve.cpubench.tuning import choose, store
from kthybrid_serve.host.host import parse_cpulist, read_host
from kthybrid_serve.model.experts import ExpertShape, decode_ceiling
from kthybrid_serve.plan.memory import container_limit_gib
from kthybrid_serve.plan.records import tune_dir, tune_key
from kthybrid_serve.plan.replicas import MEASURED, split_host

from tests.support.launcher_fixtures import GIB, H200, RTX5090, Result

Cli = Callable[..., Result]
PlanOn = Callable[..., Result]
SHAPE = ExpertShape("DeepSeek-V4-Flash", 4096, 2048, 6, 256, 43)
# Two sockets, one NUMA node each, 16 cores (32 CPUs with SMT) per node; two H200s, the
# first on node 1 and the second on node 0 (as /sys/bus/pci/devices/*/numa_node says).
TWO_SOCKETS: dict[str, Any] = {
    "sockets": 2, "cores_per_node": 16, "mem_bytes": 768 * GIB, "gpu_nodes": (1, 0),
}  # fmt: skip


@pytest.fixture
def plan_on(make_host: Callable[..., Path], v4_flash: Path, run_cli: Cli) -> Callable[..., Result]:
    """Run the CLI on a host tree built from HostSpec fields, with one --gpu per GPU."""

    def run(*args: str, gpus: int = 2, **host: Any) -> Result:
        root = make_host(**{**TWO_SOCKETS, **host})
        flags = [arg for _ in range(gpus) for arg in ("--gpu", H200)]
        return run_cli(*args, "--host-root", str(root), "--model", str(v4_flash), *flags)

    return run


def refused(result: Result, code: int, *words: str) -> None:
    lines = result.err.strip().splitlines()
    assert result.code == code, (result.code, result.err)
    assert len(lines) == 1 and lines[0].startswith("kthybrid-serve: error: "), result.err
    assert "Traceback" not in result.err
    for word in words:
        assert word in lines[0], lines[0]


def replicas_of(result: Result) -> list[dict[str, Any]]:
    assert result.code == 0, result.err
    items: list[dict[str, Any]] = result.json["replicas"]  # type: ignore[assignment]
    return items


def test_two_replicas_on_two_sockets_get_disjoint_cpus_and_nodes(plan_on: PlanOn) -> None:
    first, second = replicas_of(plan_on("plan", "--replicas", "2", "--json"))
    assert (first["numa_nodes"], second["numa_nodes"]) == ([0], [1])
    cpus = [set(parse_cpulist(r["cpuset"])) for r in (first, second)]
    assert cpus[0].isdisjoint(cpus[1])
    # Each replica's cpuset is its node's CPUs, hyperthreads included (Docker's cpuset).
    assert cpus == [set(range(16)) | set(range(32, 48)), set(range(16, 32)) | set(range(48, 64))]
    assert [r["plan"]["kt_numa_nodes"] for r in (first, second)] == [[0], [1]]


def test_each_replica_gets_the_gpu_on_its_own_numa_node(plan_on: PlanOn) -> None:
    result = plan_on("plan", "--replicas", "2", "--json")
    first, second = replicas_of(result)
    assert result.json["gpu_affinity_known"] is True
    assert (first["gpus"], first["gpu_numa_nodes"]) == ([1], [0])
    assert (second["gpus"], second["gpu_numa_nodes"]) == ([0], [1])
    assert [r["plan"]["env"]["CUDA_VISIBLE_DEVICES"] for r in (first, second)] == ["1", "0"]


def test_each_replica_listens_on_its_own_port(plan_on: PlanOn) -> None:
    replicas = replicas_of(plan_on("plan", "--replicas", "2", "--port", "31000", "--json"))
    assert [r["port"] for r in replicas] == [31000, 31001]
    for replica in replicas:
        argv = replica["plan"]["argv"]
        assert argv[argv.index("--port") + 1] == str(replica["port"])
        assert argv[:2] == ["numactl", f"--physcpubind={replica['cpuset']}"]


def test_one_replica_is_the_whole_host(plan_on: PlanOn) -> None:
    (only,) = replicas_of(plan_on("plan", "--replicas", "1", "--json"))
    assert (only["numa_nodes"], only["gpus"], only["cpuset"]) == ([0, 1], [0, 1], "0-63")
    assert only["plan"]["tp_size"] == 2


def test_unknown_gpu_affinity_is_said_and_gpus_go_in_index_order(plan_on: PlanOn) -> None:
    result = plan_on("plan", "--replicas", "2", "--json", gpu_nodes=(-1, -1))
    assert [r["gpus"] for r in replicas_of(result)] == [[0], [1]]
    assert result.json["gpu_affinity_known"] is False
    notes: list[str] = result.json["notes"]  # type: ignore[assignment]
    assert any("GPU NUMA affinity unknown for GPU(s) 0,1" in n for n in notes)
    text = plan_on("plan", "--replicas", "2", gpu_nodes=()).out
    assert "GPU NUMA affinity: UNKNOWN, GPUs assigned in index order" in text


def test_gpus_that_do_not_split_evenly_are_left_idle_and_said(plan_on: PlanOn) -> None:
    result = plan_on("plan", "--replicas", "2", "--json", gpus=3, gpu_nodes=(0, 0, 1))
    assert [r["gpus"] for r in replicas_of(result)] == [[0], [2]]
    notes: list[str] = result.json["notes"]  # type: ignore[assignment]
    assert any("GPU(s) 1 left idle" in n for n in notes)


def test_a_replica_without_a_gpu_near_it_takes_a_far_one_and_says_so(
    plan_on: PlanOn,
) -> None:
    result = plan_on("plan", "--replicas", "2", "--json", gpu_nodes=(0, 0))
    assert [r["gpus"] for r in replicas_of(result)] == [[0], [1]]
    notes: list[str] = result.json["notes"]  # type: ignore[assignment]
    assert any("GPU 1 is on NUMA node 0, not on replica 1's node(s) 1" in n for n in notes)


def test_ram_for_one_replica_but_not_two_is_refused_with_the_numbers(
    plan_on: PlanOn,
) -> None:
    assert plan_on("plan", "--replicas", "1", mem_bytes=256 * GIB).code == 0
    result = plan_on("plan", "--replicas", "2", mem_bytes=256 * GIB)
    refused(result, 13, "--replicas 2 (2 copies of the CPU experts and runtime)",
            "303.8 GiB of RAM", "243.2 GiB available")  # fmt: skip


def test_a_replica_whose_own_nodes_lack_the_ram_is_refused(plan_on: PlanOn) -> None:
    # 330 GiB: both replicas fit in MemAvailable, but each node has 148.5 GiB free.
    result = plan_on("plan", "--replicas", "2", mem_bytes=330 * GIB)
    refused(result, 13, "replica 0 (NUMA node(s) 0)", "151.9 GiB")


def test_more_replicas_than_gpus_is_refused(plan_on: PlanOn) -> None:
    result = plan_on("plan", "--replicas", "3", nodes_per_socket=2)
    refused(result, 24, "--replicas 3 needs a GPU per replica but 2 GPU(s)")


def test_more_replicas_than_numa_nodes_is_refused(plan_on: PlanOn) -> None:
    # Sub-node splits are not made: kt-kernel pins a pool per node, replicas would share one.
    result = plan_on("plan", "--replicas", "2", sockets=1, gpu_nodes=(0, 0))
    refused(result, 20, "--replicas 2 needs a NUMA node per replica", "on 1 node(s)")


def test_a_replica_index_out_of_range_is_refused(plan_on: PlanOn) -> None:
    refused(plan_on("serve", "--replicas", "2", "--replica-index", "2"), 2, "is not below")
    refused(plan_on("plan", "--replica-index", "1"), 2, "--replica-index 1 is not below")


def test_serving_one_of_several_replicas_needs_its_index(plan_on: PlanOn) -> None:
    refused(plan_on("serve", "--replicas", "2"), 2, "needs --replica-index")


@pytest.mark.parametrize("value", ["0", "-1", "257", "99999999999999999999999", "two", "1.5"])
@pytest.mark.parametrize("how", ["flag", "env"])
def test_hostile_replica_counts_are_refused_in_one_line(
    plan_on: PlanOn, monkeypatch: pytest.MonkeyPatch, value: str, how: str
) -> None:
    if how == "env":
        monkeypatch.setenv("KTHYBRID_REPLICAS", value)
        result = plan_on("plan")
    else:
        result = plan_on("plan", f"--replicas={value}")
    refused(result, 2, "from 1 to 256")


@pytest.mark.parametrize("value", ["-1", "256", "x"])
def test_hostile_replica_indexes_are_refused_in_one_line(plan_on: PlanOn, value: str) -> None:
    refused(plan_on("plan", f"--replica-index={value}"), 2, "--replica-index")


def test_replicas_do_not_combine_with_a_node_list(plan_on: PlanOn) -> None:
    refused(plan_on("plan", "--replicas", "2", "--kt-numa-nodes", "0"), 2, "unset it")


def test_one_replica_of_several_plans_only_its_part(plan_on: PlanOn) -> None:
    result = plan_on("plan", "--replicas", "2", "--replica-index", "1")
    assert result.code == 0, result.err
    assert "replica 1 of 2" in result.out
    assert "CUDA_VISIBLE_DEVICES=0" in result.out
    assert "--physcpubind=16-31,48-63 --interleave=1" in result.out
    assert "--port 30001" in result.out and "--kt-numa-nodes 1" in result.out


def test_the_fleet_env_lines_bind_each_replica(plan_on: PlanOn) -> None:
    result = plan_on("plan", "--replicas", "2", "--fleet-env")
    assert result.code == 0, result.err
    lines = [line for line in result.out.splitlines() if not line.startswith("#")]
    planned = json.loads(plan_on("plan", "--replicas", "2", "--json").out)["replicas"]
    # Each replica's memory limit: the chart's budget for its own CPU experts (memory.py).
    limits = [container_limit_gib(r["plan"]["cpu_expert_bytes"]) for r in planned]
    assert lines == [
        "FLEET_0_CPUSET=0-15,32-47", "FLEET_0_NUMA_NODES=0", "FLEET_0_GPUS=1",
        f"FLEET_0_MEM_LIMIT={limits[0]}g",
        "FLEET_1_CPUSET=16-31,48-63", "FLEET_1_NUMA_NODES=1", "FLEET_1_GPUS=0",
        f"FLEET_1_MEM_LIMIT={limits[1]}g",
    ]  # fmt: skip
    assert all(limit > 40 for limit in limits)  # experts, pinned buffers, shm and headroom


def test_gpu_numa_nodes_come_from_the_host_trees_pci_devices(
    make_host: Callable[..., Path],
) -> None:
    host = read_host(str(make_host(**{**TWO_SOCKETS, "gpu_nodes": (1, -1)})), [H200, H200])
    assert [(g.numa_node, g.pci_bus_id) for g in host.gpus] == [
        (1, "0000:17:00.0"), (None, "0000:37:00.0"),
    ]  # fmt: skip
    other = read_host(str(make_host(**{**TWO_SOCKETS, "gpu_nodes": (1,)})), [H200, H200])
    assert [g.numa_node for g in other.gpus] == [None, None]
    assert any("their NUMA nodes are unknown" in note for note in other.notes)


def _store_record(root: Path, environ: dict[str, str]) -> float:
    """A whole-host tune record: 28 threads on both nodes, 80 GB/s; returns the GB/s."""
    host = read_host(str(root), [RTX5090, RTX5090])
    run = {"threads": 28, "pools": 2, "threads_per_pool": [14, 14], "numa_nodes": [0, 1],
           "labels": ["sweep"], "gbps": 80.0}  # fmt: skip
    measured = {"runs": [run], "plan_threads": 28, "plan_gbps": 80.0, "bandwidth_gbps": 200.0}
    store(tune_dir(environ), tune_key(host, SHAPE, "MXFP4"), measured,
          choose(measured, host.physical_cores_by_node()))  # fmt: skip
    return 80.0


def test_the_decode_ceiling_is_shown_per_replica_and_in_total(
    make_host: Callable[..., Path], v4_flash: Path, run_cli: Cli,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    monkeypatch.setenv("XDG_CACHE_HOME", environ["XDG_CACHE_HOME"])
    root = make_host(**TWO_SOCKETS)
    gbps = _store_record(root, environ)
    # Two 32 GiB GPUs: one server on both keeps experts on the CPU too (H200s hold them all).
    args = ("--host-root", str(root), "--model", str(v4_flash), "--gpu", RTX5090, "--gpu", RTX5090)

    one = json.loads(run_cli("plan", "--replicas", "1", "--json", *args).out)
    (whole,) = one["replicas"]
    assert whole["cpu_decode_ceiling_reason"] == MEASURED
    experts = whole["plan"]["kt_num_gpu_experts"]
    assert whole["cpu_decode_ceiling"] == pytest.approx(
        decode_ceiling(gbps, SHAPE, "MXFP4", experts)
    )
    two = json.loads(run_cli("plan", "--replicas", "2", "--json", *args).out)
    for replica in two["replicas"]:
        plan = replica["plan"]
        # A replica has 1 of the 2 nodes and fewer threads than the record: scaled by the lower.
        scale = min(1 / 2, plan["kt_cpuinfer"] / 28)
        expected = decode_ceiling(gbps * scale, SHAPE, "MXFP4", plan["kt_num_gpu_experts"])
        assert replica["cpu_decode_ceiling"] == pytest.approx(expected)
    total = sum(r["cpu_decode_ceiling"] for r in two["replicas"])
    assert two["total"]["cpu_decode_ceiling"] == pytest.approx(total)
    assert two["whole_host_cpu_decode_ceiling"] == pytest.approx(whole["cpu_decode_ceiling"])

    text = run_cli("plan", "--replicas", "2", *args).out
    rows = {line.split()[0]: line for line in text.splitlines() if line[:1] in {"0", "1", "t"}}
    for replica in two["replicas"]:
        assert f"{replica['cpu_decode_ceiling']:.1f} tokens/s" in rows[str(replica["index"])]
    assert f"{total:.1f} tokens/s" in rows["total"]
    assert f"(--replicas 1): {whole['cpu_decode_ceiling']:.1f} tokens/s" in text


def test_nvml_uuids_name_the_gpus_for_docker_and_cuda(make_host: Callable[..., Path]) -> None:
    # Inside a container that sees some GPUs NVML's index is not the host's; the UUID is.
    host = read_host(str(make_host(**TWO_SOCKETS)), [H200, H200])
    with_uuids = replace(host, gpus=tuple(replace(g, uuid=f"GPU-{g.index}aa") for g in host.gpus))
    split = split_host(with_uuids, 2, 30000)
    assert [r.device_ids for r in split.replicas] == ["GPU-1aa", "GPU-0aa"]
    assert [r.gpu_ids for r in split.replicas] == ["1", "0"]
    one_without = replace(with_uuids, gpus=(with_uuids.gpus[0], replace(host.gpus[1], uuid=None)))
    # Per replica: its GPUs by UUID only when each of them has one.
    assert [r.device_ids for r in split_host(one_without, 2, 30000).replicas] == ["1", "GPU-0aa"]


def test_a_garbage_gpu_numa_node_in_the_host_tree_is_refused(plan_on: PlanOn) -> None:
    garbage = {"/sys/bus/pci/devices/0000:17:00.0/numa_node": "node one\n"}
    refused(plan_on("plan", "--replicas", "2", extra=garbage), 22, "numa_node", "not a number")


def doctor_list(result: Result) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = json.loads(result.out)
    return checks


def doctor_checks(result: Result) -> dict[str, list[dict[str, Any]]]:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for check in doctor_list(result):
        by_name.setdefault(check["name"], []).append(check)
    return by_name


def test_doctor_reports_each_replicas_part_of_the_host(plan_on: PlanOn) -> None:
    result = plan_on("doctor", "--replicas", "2", "--json")
    assert result.code == 0, result.err
    checks = doctor_checks(result)
    assert checks["replicas"][0]["message"].startswith("2 replica(s); GPU NUMA affinity known")
    # The same split as `plan --replicas 2`: node 0's CPUs and the GPU on node 0 (GPU 1).
    assert checks["replica-0"][0]["message"].startswith(
        "replica 0 (NUMA node(s) 0): CPUs 0-15,32-47, GPU(s) 1, port 30000; --kt-cpuinfer "
    )
    assert checks["replica-1"][0]["message"].startswith(
        "replica 1 (NUMA node(s) 1): CPUs 16-31,48-63, GPU(s) 0, port 30001; --kt-cpuinfer "
    )
    # Host memory is checked for both together and for each replica's own nodes.
    memory = [c["message"] for c in checks["host-memory"]]
    assert [m.split(":")[0] for m in memory] == [
        "--replicas 2 (2 copies of the CPU experts and runtime)",
        "replica 0 (NUMA node(s) 0)", "replica 1 (NUMA node(s) 1)"]  # fmt: skip
    assert "plan" not in checks  # the whole-host plan is not what this host will run


def test_doctor_fails_the_replica_check_plan_refuses_with_its_code(plan_on: PlanOn) -> None:
    result = plan_on("doctor", "--replicas", "2", "--json", mem_bytes=256 * GIB)
    assert result.code == 13
    failed = [c for c in doctor_list(result) if c["status"] == "fail"]
    assert failed[0]["message"].startswith("--replicas 2 (2 copies of the CPU experts")
    assert failed[0]["exit_code"] == 13
    # doctor goes on: each replica is still reported.
    assert {"replica-0", "replica-1"} <= set(doctor_checks(result))
    text = plan_on("doctor", "--replicas", "2", mem_bytes=256 * GIB)
    assert text.code == 13 and "Traceback" not in text.err
    assert "[FAIL] host-memory: --replicas 2 (2 copies" in text.out


def test_doctor_with_more_replicas_than_gpus_fails_one_check(plan_on: PlanOn) -> None:
    result = plan_on("doctor", "--replicas", "3", "--json", nodes_per_socket=2)
    assert result.code == 24
    (check,) = doctor_checks(result)["replicas"]
    assert check["status"] == "fail" and check["exit_code"] == 24
    assert "--replicas 3 needs a GPU per replica" in check["message"]


def test_doctor_warns_when_gpu_affinity_is_unknown(plan_on: PlanOn) -> None:
    result = plan_on("doctor", "--replicas", "2", "--json", gpu_nodes=(-1, -1))
    assert result.code == 0, result.err
    (check,) = doctor_checks(result)["replicas"]
    assert check["status"] == "warn"
    assert "UNKNOWN, GPUs in index order" in check["message"]
    notes = [c["message"] for c in doctor_checks(result)["replicas-note"]]
    assert any("GPU NUMA affinity unknown for GPU(s) 0,1" in n for n in notes)


def test_doctor_for_one_replica_of_several_checks_only_its_part(plan_on: PlanOn) -> None:
    result = plan_on("doctor", "--replicas", "2", "--replica-index", "1", "--json",
                     mem_bytes=330 * GIB)  # fmt: skip
    checks = doctor_checks(result)
    assert "replica-0" not in checks and "replica-1" in checks
    memory = [c["message"].split(":")[0] for c in checks["host-memory"]]
    assert memory == ["replica 1 (NUMA node(s) 1)"]
