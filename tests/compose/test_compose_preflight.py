"""Memory and process limits on every service, and compose/preflight.sh: the project's own
message for a bad size or a missing API key file before `docker compose up`, where Compose
itself passes SHM_SIZE=1e99 and MEMLOCK=-2 on to the engine."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.fleet import load_fleet
from tests.support.compose_project import (
    API_KEY,
    COMPOSE_DIR,
    PROFILES,
    ComposeProject,
    _clean_environ,
)

Compose = Callable[..., ComposeProject]
PREFLIGHT = COMPOSE_DIR / "preflight.sh"
CHART_VALUES = COMPOSE_DIR.parent / "helm" / "kthybrid" / "values.yaml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        project = ComposeProject(env_dir=Path(tmp))
        project.set(MODELS_DIR=tmp)
        found: dict[str, Any] = project.config((*PROFILES, "tune", "monitoring"))["services"]
    return found


def preflight(project: ComposeProject, **shell: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PREFLIGHT), "--env-file", str(project.env_file)],
        env={**_clean_environ(), **shell},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_service_has_a_memory_and_a_process_limit(services: dict[str, Any]) -> None:
    assert set(services) >= {"server", "server-mtp", "download", "convert", "tune", "chat",
                             "bench-serve", "prometheus"}  # fmt: skip
    for name, service in services.items():
        assert int(service["mem_limit"]) > 0, name
        assert int(service["pids_limit"]) > 0, name


def test_the_server_memory_limit_is_the_charts_host_memory_budget(
    services: dict[str, Any],
) -> None:
    memory = yaml.safe_load(CHART_VALUES.read_text())["hostMemory"]
    budget_gi = sum(memory[k] for k in ("cpuExpertWeightsGi", "pinnedBuffersGi", "shmGi"))
    budget_gi += memory["headroomGi"]
    for name in ("server", "server-mtp", "tune"):
        assert int(services[name]["mem_limit"]) == budget_gi * 2**30, name


def test_the_settings_of_env_example_pass(compose: Compose) -> None:
    result = preflight(compose())
    assert result.returncode == 0, result.stderr
    assert "usable" in result.stdout


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SHM_SIZE", "1e99"),
        ("SHM_SIZE", "99999999999g"),
        ("SHM_SIZE", "0"),
        ("SHM_SIZE", "16 g"),
        ("MEM_LIMIT", "lots"),
        ("CONVERT_MEM_LIMIT", "-1"),
        ("PROMETHEUS_MEM_LIMIT", "1e99"),
        ("ROUTER_MEM_LIMIT", "-2"),
        ("FLEET_1_MEM_LIMIT", "lots"),
        ("MEMLOCK", "-2"),
        ("MEMLOCK", "1e9"),
        ("MEMLOCK", "99999999999999999999"),
        ("PIDS_LIMIT", "0"),
        ("PIDS_LIMIT", "-1"),
    ],
)
def test_a_bad_size_is_refused_with_the_projects_message(
    compose: Compose, setting: str, value: str
) -> None:
    result = preflight(compose(**{setting: value}))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"preflight: {setting}={value} is not")


def test_a_bad_size_in_the_shell_beats_the_env_file(compose: Compose) -> None:
    # As for Compose: a variable of the shell wins over the env file.
    result = preflight(compose(), SHM_SIZE="1e99")
    assert result.returncode == 2
    assert "SHM_SIZE=1e99 is not a size" in result.stderr


def test_compose_alone_would_pass_the_overflowed_size_to_the_engine(compose: Compose) -> None:
    # Why the preflight exists: `docker compose config` accepts these values.
    config = compose(SHM_SIZE="1e99", MEMLOCK="-2").config(("serve",))
    server = config["services"]["server"]
    assert int(server["shm_size"]) < 0
    assert server["ulimits"]["memlock"] == -2


def test_a_missing_api_key_file_is_reported_before_up(compose: Compose, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key"
    result = preflight(compose(API_KEY_FILE=str(missing)))
    assert result.returncode == 2
    assert f"API_KEY_FILE={missing} does not exist" in result.stderr
    assert "README: API key" in result.stderr


def test_an_empty_api_key_file_is_refused(compose: Compose, tmp_path: Path) -> None:
    empty = tmp_path / "empty-key"
    empty.write_text("")
    result = preflight(compose(API_KEY_FILE=str(empty)))
    assert result.returncode == 2
    assert "is empty" in result.stderr


@pytest.mark.skipif(os.geteuid() == 10000, reason="the test's user is the services' UID")
def test_a_key_file_uid_10000_cannot_read_is_refused(compose: Compose, tmp_path: Path) -> None:
    private = tmp_path / "private-key"
    private.write_text(API_KEY)
    private.chmod(0o600)
    result = preflight(compose(API_KEY_FILE=str(private)))
    assert result.returncode == 2
    assert "is not readable by UID 10000" in result.stderr


def test_the_compose_readme_documents_the_preflight() -> None:
    readme = (COMPOSE_DIR / "README.md").read_text()
    assert "./preflight.sh" in readme
    steps = readme.split("## Steps", 1)[1].split("\n## ", 1)[0]
    assert steps.index("./preflight.sh") < steps.index("docker compose up -d --wait")


def test_the_fleets_own_limits_pass_when_they_are_sizes(compose: Compose) -> None:
    assert preflight(compose(FLEET_0_MEM_LIMIT="56g", FLEET_1_MEM_LIMIT="")).returncode == 0
    # Set in the shell only (not in the env file): still checked.
    result = preflight(compose(), FLEET_1_MEM_LIMIT="1e99")
    assert result.returncode == 2
    assert result.stderr.startswith("preflight: FLEET_1_MEM_LIMIT=1e99 is not a size")


@pytest.mark.parametrize("name", ["FLEET_9_CPUSET", "FLEET_01_GPUS", "FLEET_1_GPU"])
@pytest.mark.parametrize("where", ["env file", "shell"])
def test_a_fleet_line_compose_fleet_yaml_does_not_read_is_refused(
    compose: Compose, name: str, where: str
) -> None:
    # A replica the fleet does not run, a leading zero, a misspelt key: Compose would ignore it.
    result = (preflight(compose(**{name: "0"})) if where == "env file"
              else preflight(compose(), **{name: "0"}))  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    replicas = load_fleet()["replicas"]
    assert lines[0].startswith(f"preflight: {name} is not read by compose.fleet.yaml, "
                               f"which runs {replicas} replicas")  # fmt: skip
    assert f"FLEET_<0..{replicas - 1}>_{{CPUSET,GPUS,MEM_LIMIT,NUMA_NODES}}" in lines[0]
