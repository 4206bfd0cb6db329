"""Tune records: keyed by host fingerprint, expert shape and method; damaged ones refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kthybrid_serve.cpubench.tuning import choose, store
from kthybrid_serve.errors import TuneError
from kthybrid_serve.host.host import HostFacts, read_host
from kthybrid_serve.model.experts import ExpertShape
from kthybrid_serve.plan.records import lookup, tune_dir, tune_key

V4_FLASH = ExpertShape("DeepSeek-V4-Flash", 4096, 2048, 6, 256, 43)
H200 = "NVIDIA H200,141GiB,9.0"


def run(threads: int, gbps: float | None, nodes: tuple[int, ...] = (0,)) -> dict[str, Any]:
    per_pool = [threads // len(nodes)] * len(nodes)
    return {"threads": threads, "pools": len(nodes), "threads_per_pool": per_pool,
            "numa_nodes": list(nodes), "labels": ["sweep"], "gbps": gbps}  # fmt: skip


def bench_result() -> dict[str, Any]:
    return {
        "runs": [run(13, 43.0), run(15, 49.2), run(16, 10.0), run(16, 60.0, (0, 1))],
        "plan_threads": 13,
        "plan_gbps": 43.0,
        "bandwidth_gbps": 109.6,
    }


@pytest.fixture
def host(make_host: Callable[..., Path]) -> HostFacts:
    return read_host(str(make_host(cores_per_node=16, smt=False)), [H200])


def test_tune_keeps_the_fastest_layout_the_host_can_run(host: HostFacts) -> None:
    # 2 pools on a one-node host measured fastest but the planner refuses it: not kept.
    chosen = choose(bench_result(), host.physical_cores_by_node())
    assert (chosen["threads"], chosen["gbps"]) == (15, 49.2)


def test_a_stored_record_is_found_for_the_same_host_shape_and_method(
    host: HostFacts, tmp_path: Path
) -> None:
    key = tune_key(host, V4_FLASH, "MXFP4")
    result = bench_result()
    path = store(tmp_path, key, result, choose(result, host.physical_cores_by_node()))
    tuned = lookup(tmp_path, key)
    assert tuned is not None and tuned.path == path
    assert (tuned.threads, tuned.numa_nodes, tuned.threads_per_pool) == (15, (0,), (15,))
    assert (tuned.gbps, tuned.rule_threads, tuned.rule_gbps) == (49.2, 13, 43.0)
    assert not list(tmp_path.glob(".tmp-*")), "the atomic write left its temporary file"


def test_another_method_shape_or_host_finds_nothing(
    host: HostFacts, tmp_path: Path, make_host: Callable[..., Path]
) -> None:
    key = tune_key(host, V4_FLASH, "MXFP4")
    store(tmp_path, key, bench_result(), choose(bench_result(), host.physical_cores_by_node()))
    assert lookup(tmp_path, tune_key(host, V4_FLASH, "AMXINT4")) is None
    other_shape = ExpertShape("other", 7168, 2048, 8, 256, 58)
    assert lookup(tmp_path, tune_key(host, other_shape, "MXFP4")) is None
    # Fewer allowed CPUs (a cgroup cpuset) is another host for tuning purposes.
    limited = read_host(str(make_host(cores_per_node=16, smt=False, cgroup_cpus="0-11")), [H200])
    assert lookup(tmp_path, tune_key(limited, V4_FLASH, "MXFP4")) is None


def test_the_models_depth_and_name_do_not_change_the_key(host: HostFacts) -> None:
    deeper = ExpertShape("renamed", 4096, 2048, 6, 256, 61)
    assert tune_key(host, deeper, "MXFP4") == tune_key(host, V4_FLASH, "MXFP4")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda text: text[: len(text) // 2], "unreadable"),
        (lambda text: text.replace('"threads": 15', '"threads": 99'), "impossible pool layout"),
        (lambda text: text.replace('"gbps": 49.2', '"gbps": "fast"'), "damaged"),
        (lambda text: text.replace('"MXFP4"', '"AMXINT4"'), "not for this host"),
    ],
)
def test_a_damaged_record_is_refused_with_the_file_and_the_fix(
    host: HostFacts, tmp_path: Path, damage: Callable[[str], str], message: str
) -> None:
    key = tune_key(host, V4_FLASH, "MXFP4")
    path = store(
        tmp_path, key, bench_result(), choose(bench_result(), host.physical_cores_by_node())
    )
    path.write_text(damage(path.read_text()))
    with pytest.raises(TuneError, match=message) as raised:
        lookup(tmp_path, key)
    assert str(path) in raised.value.message
    assert "run `kthybrid-serve tune` again" in raised.value.message


def test_an_unwritable_cache_is_refused_with_what_to_mount(host: HostFacts, tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    key = tune_key(host, V4_FLASH, "MXFP4")
    with pytest.raises(TuneError, match="mount a writable cache volume"):
        store(blocked / "tune", key, bench_result(), run(15, 49.2))


def test_records_live_in_the_cache_volume() -> None:
    assert tune_dir({"XDG_CACHE_HOME": "/cache"}) == Path("/cache/kthybrid/tune")
    assert tune_dir({"HOME": "/home/kthybrid"}) == Path("/home/kthybrid/.cache/kthybrid/tune")


def test_the_record_keeps_the_bench_it_came_from(host: HostFacts, tmp_path: Path) -> None:
    key = tune_key(host, V4_FLASH, "MXFP4")
    path = store(tmp_path, key, bench_result(), run(15, 49.2))
    assert json.loads(path.read_text())["bench"]["runs"] == bench_result()["runs"]


def test_tune_record_changes_the_plans_threads_and_their_source(
    run_cli: Callable[..., Any],
    make_host: Callable[..., Path],
    v4_flash: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = make_host(sockets=2, nodes_per_socket=2, cores_per_node=16, mem_bytes=256 * 1024**3)
    args = ["plan", "--host-root", str(root), "--model", str(v4_flash), "--json",
            "--gpu", "NVIDIA GeForce RTX 5090,32607MiB,12.0"]  # fmt: skip

    def items(result: Any) -> dict[str, dict[str, str]]:
        assert result.code == 0, result.err
        return {i["name"]: i for i in result.json["items"]}

    before = items(run_cli(*args))
    assert (before["--kt-cpuinfer"]["value"], before["--kt-cpuinfer"]["source"]) == (
        "60",
        "planned",
    )
    assert before["CPU decode ceiling"]["value"] == "not measured"

    host = read_host(str(root), ["NVIDIA GeForce RTX 5090,32607MiB,12.0"])
    shape = ExpertShape("DeepSeek-V4-Flash", 4096, 2048, 6, 256, 43)
    measured = {"runs": [run(56, 80.0, (0, 1, 2, 3)), run(60, 70.0, (0, 1, 2, 3))],
                "plan_threads": 60, "plan_gbps": 70.0, "bandwidth_gbps": 200.0}  # fmt: skip
    store(tune_dir({"XDG_CACHE_HOME": str(tmp_path / "cache")}), tune_key(host, shape, "MXFP4"),
          measured, choose(measured, host.physical_cores_by_node()))  # fmt: skip

    after = items(run_cli(*args))
    assert (after["--kt-cpuinfer"]["value"], after["--kt-cpuinfer"]["source"]) == ("56", "measured")
    assert "80.0 GB/s" in after["--kt-cpuinfer"]["reason"]
    assert after["--kt-numa-nodes"]["value"] == "0 1 2 3"
    assert after["CPU decode ceiling"]["value"].endswith("tokens/s")
    # A thread count given by the user still wins over the record.
    given = items(run_cli(*args, "--kt-cpuinfer", "48"))
    assert (given["--kt-cpuinfer"]["value"], given["--kt-cpuinfer"]["source"]) == (
        "48",
        "flag --kt-cpuinfer",
    )
