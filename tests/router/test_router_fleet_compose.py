"""The compose `fleet` profile: `docker compose config` of compose.yaml + compose.fleet.yaml."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.fleet import load_fleet, render_fleet_compose

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"
KEY = "fleet-test-key-0123456789abcdef"


def bindings(replicas: int) -> dict[str, str]:
    values = {}
    for i in range(replicas):
        values[f"FLEET_{i}_CPUSET"] = f"{i * 8}-{i * 8 + 7}"
        values[f"FLEET_{i}_NUMA_NODES"] = str(i)
        values[f"FLEET_{i}_GPUS"] = f"GPU-{i}"
    return values


def compose_config(
    tmp: Path, settings: dict[str, str], profile: str = "fleet"
) -> subprocess.CompletedProcess[str]:
    key = tmp / "api-key"
    key.write_text(KEY + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "KTHYBRID_"))}
    env.update({"ARCH": "sm120", "MODELS_DIR": str(tmp), "API_KEY_FILE": str(key), **settings})
    env = {k: v for k, v in env.items() if not k.startswith("FLEET_") or k in settings}
    return subprocess.run(
        ["docker", "compose", "-f", "compose.yaml", "-f", "compose.fleet.yaml",
         "-p", "kthybrid-router-fleet", "--profile", profile, "config", "--format", "json"],
        cwd=COMPOSE_DIR, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    replicas = load_fleet()["replicas"]
    result = compose_config(tmp_path_factory.mktemp("fleet"), bindings(replicas))
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = json.loads(result.stdout)["services"]
    return services


def test_the_fleet_has_a_router_and_one_server_per_replica_of_the_data(
    fleet: dict[str, Any],
) -> None:
    replicas = load_fleet()["replicas"]
    assert sorted(fleet) == sorted(["router", *(f"server-{i}" for i in range(replicas))])


def test_each_replica_gets_its_own_cpuset_numa_nodes_and_gpu(fleet: dict[str, Any]) -> None:
    expected = bindings(load_fleet()["replicas"])
    for name, service in fleet.items():
        if name == "router":
            continue
        i = int(name.removeprefix("server-"))
        assert service["cpuset"] == expected[f"FLEET_{i}_CPUSET"]
        assert service["environment"]["KTHYBRID_KT_NUMA_NODES"] == expected[f"FLEET_{i}_NUMA_NODES"]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert [d["device_ids"] for d in devices] == [[expected[f"FLEET_{i}_GPUS"]]]
        assert service["profiles"] == ["fleet"]
        assert not service.get("ports"), "only the router publishes a port"
        assert service["networks"]["default"]["aliases"] == [f"kthybrid-{i}"]


def test_the_router_waits_for_every_healthy_replica_and_routes_to_each(
    fleet: dict[str, Any],
) -> None:
    router = fleet["router"]
    servers = sorted(n for n in fleet if n != "router")
    assert {n: d["condition"] for n, d in router["depends_on"].items()} == dict.fromkeys(
        servers, "service_healthy"
    )
    command = router["command"]
    urls = command[command.index("--worker-urls") + 1 :]
    assert urls == [f"http://{n}:30000" for n in servers]
    assert command[command.index("--policy") + 1] == load_fleet()["policy"]
    assert [p["published"] for p in router["ports"]] == ["30000"]


def test_the_router_reads_the_key_from_the_secret_file_only(
    fleet: dict[str, Any], tmp_path: Path
) -> None:
    router = fleet["router"]
    assert router["environment"] == {"KTHYBRID_API_KEY_FILE": "/run/secrets/kthybrid-api-key"}
    assert KEY not in json.dumps(fleet)
    assert "--api-key" not in router["command"]


def test_a_missing_replica_binding_stops_compose_naming_it(tmp_path: Path) -> None:
    settings = bindings(load_fleet()["replicas"])
    del settings["FLEET_1_GPUS"]
    result = compose_config(tmp_path, settings)
    assert result.returncode != 0
    assert "FLEET_1_GPUS is not set" in result.stderr


def test_the_serve_profile_does_not_start_the_replicas(tmp_path: Path) -> None:
    result = compose_config(tmp_path, bindings(load_fleet()["replicas"]), profile="serve")
    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(result.stdout)["services"]) == ["server"]


def test_the_render_follows_the_replica_count_of_the_data(tmp_path: Path) -> None:
    data = tmp_path / "fleet.yaml"
    data.write_text("replicas: 3\npolicy: power_of_two\n")
    rendered = yaml.safe_load(
        render_fleet_compose(tmp_path, data).text.replace("!reset", "").replace("!override", "")
    )
    services = rendered["services"]
    assert sorted(services) == ["router", "server-0", "server-1", "server-2"]
    assert "power_of_two" in " ".join(services["router"]["command"])


@pytest.mark.parametrize(
    ("text", "says"),
    [("replicas: 0\npolicy: cache_aware\n", "give 1 to"), ("replicas: two\n", "whole number"),
     ("replicas: 2\npolicy: fastest\n", "is not one of"), ("[", "not valid YAML")],
)  # fmt: skip
def test_bad_fleet_data_is_refused_with_one_line(tmp_path: Path, text: str, says: str) -> None:
    from builder.errors import MatrixError

    data = tmp_path / "fleet.yaml"
    data.write_text(text)
    with pytest.raises(MatrixError, match=says):
        load_fleet(data)


def test_every_fleet_service_has_a_memory_and_a_process_limit(fleet: dict[str, Any]) -> None:
    # The servers inherit compose.yaml's server limits (MEM_LIMIT); the router has its own.
    for name, service in fleet.items():
        assert int(service["mem_limit"]) > 0, name
        assert int(service["pids_limit"]) > 0, name


def test_the_routers_memory_limit_is_the_charts_default(fleet: dict[str, Any]) -> None:
    values = yaml.safe_load((COMPOSE_DIR.parent / "helm/kthybrid/values.yaml").read_text())
    assert int(fleet["router"]["mem_limit"]) == values["router"]["resources"]["memoryGi"] * 2**30


def test_a_replica_without_its_own_limit_gets_the_servers(fleet: dict[str, Any]) -> None:
    # FLEET_<i>_MEM_LIMIT unset: compose.yaml's MEM_LIMIT default, as the single server has.
    compose = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    default = compose["x-host-memory"]["mem_limit"].removeprefix("${MEM_LIMIT:-").removesuffix("}")
    assert default.endswith("g")
    for i in range(load_fleet()["replicas"]):
        assert int(fleet[f"server-{i}"]["mem_limit"]) == int(default[:-1]) * 2**30
