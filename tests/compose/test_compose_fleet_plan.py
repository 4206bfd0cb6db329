"""`plan --replicas 2 --fleet-env` fills the fleet profile: `docker compose config` binds each
replica to the CPUs, NUMA node and GPU the plan gave it (config only: no engine, no image)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kthybrid_serve.cli import main

from builder.fleet import load_fleet
from tests.support.compose_project import COMPOSE_DIR, ENV_EXAMPLE
from tests.support.launcher_fixtures import H200, HostSpec, ModelSpec, build_host, build_model

GIB = 1024**3


@pytest.fixture(scope="module")
def fleet_lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """What the plan prints for a two-socket host whose GPU 0 sits on node 1, GPU 1 on node 0."""
    tmp = tmp_path_factory.mktemp("fleet-plan")
    spec = HostSpec(sockets=2, cores_per_node=16, mem_bytes=768 * GIB, gpu_nodes=(1, 0))
    root = build_host(tmp / "host", spec)
    model = build_model(tmp / "DeepSeek-V4-Flash", ModelSpec())
    replicas = str(load_fleet()["replicas"])
    out = tmp / "out"
    saved = {k: v for k, v in os.environ.items() if k.startswith("KTHYBRID_")}
    for name in saved:
        del os.environ[name]
    try:
        with out.open("w") as stream, contextlib.redirect_stdout(stream):
            code = main(["plan", "--replicas", replicas, "--fleet-env", "--host-root", str(root),
                         "--model", str(model), "--gpu", H200, "--gpu", H200])  # fmt: skip
    finally:
        os.environ.update(saved)
    assert code == 0
    return out.read_text().splitlines()


def test_the_plan_prints_four_bindings_per_replica(fleet_lines: list[str]) -> None:
    bindings = [line for line in fleet_lines if not line.startswith("#")]
    assert len(bindings) == 4 * load_fleet()["replicas"]
    assert all(line.startswith("FLEET_") and "=" in line for line in bindings)


def test_compose_renders_the_planned_bindings_appended_to_env_example(
    fleet_lines: list[str], tmp_path: Path
) -> None:
    # As the README says: the lines appended to a copy of .env.example (its empty FLEET_*
    # lines come first; the later assignment wins).
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text() + "\n".join(fleet_lines) + "\n")
    key = tmp_path / "api-key"
    key.write_text("fleet-plan-key-0123456789abcdef\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMPOSE_", "KTHYBRID_", "FLEET_"))}  # fmt: skip
    env.update({"MODELS_DIR": str(tmp_path), "API_KEY_FILE": str(key)})
    result = subprocess.run(
        ["docker", "compose", "--env-file", str(env_file), "-f", "compose.yaml", "-f",
         "compose.fleet.yaml", "-p", "kthybrid-replicas-fleet", "--profile", "fleet", "config",
         "--format", "json"],
        cwd=COMPOSE_DIR, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = json.loads(result.stdout)["services"]
    expected = {
        "server-0": ("0-15,32-47", "0", "1"),  # node 0's CPUs; GPU 1 is the one on node 0
        "server-1": ("16-31,48-63", "1", "0"),
    }
    printed = dict(line.split("=", 1) for line in fleet_lines if not line.startswith("#"))
    for name, (cpuset, nodes, gpus) in expected.items():
        service = services[name]
        assert service["cpuset"] == cpuset
        # Each replica's memory limit is its own plan's budget (the chart's formula).
        limit = printed[f"FLEET_{name[-1]}_MEM_LIMIT"]
        assert limit.endswith("g") and int(service["mem_limit"]) == int(limit[:-1]) * GIB
        assert service["environment"]["KTHYBRID_KT_NUMA_NODES"] == nodes
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert [d["device_ids"] for d in devices] == [[gpus]]


def test_preflight_passes_the_planned_bindings(fleet_lines: list[str], tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    key = tmp_path / "api-key"
    key.write_text("fleet-plan-key-0123456789abcdef\n")
    key.chmod(0o644)
    env_file.write_text(ENV_EXAMPLE.read_text() + f"API_KEY_FILE={key}\n"
                        + "\n".join(fleet_lines) + "\n")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "API_KEY"))}
    result = subprocess.run(
        ["bash", str(COMPOSE_DIR / "preflight.sh"), "--env-file", str(env_file)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_preflight_refuses_the_bindings_of_a_plan_for_more_replicas(
    fleet_lines: list[str], tmp_path: Path
) -> None:
    # The plan made for one replica more than compose.fleet.yaml runs: its last replica's
    # lines would be ignored and the fleet would come up one server short.
    replicas = load_fleet()["replicas"]
    extra = [line.replace("FLEET_0_", f"FLEET_{replicas}_") for line in fleet_lines
             if line.startswith("FLEET_0_")]  # fmt: skip
    env_file = tmp_path / ".env"
    key = tmp_path / "api-key"
    key.write_text("fleet-plan-key-0123456789abcdef\n")
    key.chmod(0o644)
    env_file.write_text(ENV_EXAMPLE.read_text() + f"API_KEY_FILE={key}\n"
                        + "\n".join(fleet_lines + extra) + "\n")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "API_KEY"))}
    result = subprocess.run(
        ["bash", str(COMPOSE_DIR / "preflight.sh"), "--env-file", str(env_file)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == len(extra) == 4
    for line in lines:
        assert line.startswith(f"preflight: FLEET_{replicas}_")
        assert f"compose.fleet.yaml, which runs {replicas} replicas" in line
        assert "builder/fleet.yaml" in line
