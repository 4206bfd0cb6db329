"""Compose's monitoring profile: the builder's Prometheus image starts with the project's
config, loads the five alerts and scrapes the server's alias as job kthybrid."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from observability_stack import free_port, http_get

from builder.aux_images import build_aux_image
from builder.matrix import load_versions

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "kthybrid-obs-monitoring"
IMAGE = "kthybrid-prometheus:latest"


def _compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", "--project-name", PROJECT, "--profile", "monitoring", *args],
        cwd=ROOT / "compose", env=env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="session")
def monitoring_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    found = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=False)
    if found.returncode != 0:
        build_aux_image("prometheus", load_versions(), "kthybrid", pull=False)
    port = free_port()
    models = tmp_path_factory.mktemp("models")
    env = {**os.environ, "ARCH": "sm120", "MODELS_DIR": str(models), "PROMETHEUS_PORT": str(port),
           "API_KEY_FILE": "/dev/null", "COMPOSE_FILE": "compose.yaml"}  # fmt: skip
    up = _compose("up", "-d", "prometheus", env=env)
    try:
        assert up.returncode == 0, up.stderr
        url = f"http://127.0.0.1:{port}"
        for _ in range(60):
            try:
                if http_get(f"{url}/-/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        yield url
    finally:
        _compose("down", "--volumes", env=env)


def test_the_monitoring_profile_loads_the_alerts(monitoring_prometheus: str) -> None:
    code, body = http_get(f"{monitoring_prometheus}/api/v1/rules")
    assert code == 200, body
    rules = [r["name"] for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
    assert sorted(rules) == ["KthybridNoTokensWhileRequestsWait", "KthybridQueueGrowing",
                             "KthybridRestarted", "KthybridServerDown",
                             "KthybridTimeToFirstTokenHigh"]  # fmt: skip


def test_the_monitoring_profile_scrapes_the_server_alias_as_job_kthybrid(
    monitoring_prometheus: str,
) -> None:
    targets: list[dict[str, Any]] = []
    for _ in range(60):  # service discovery hands the static target over within seconds
        code, body = http_get(f"{monitoring_prometheus}/api/v1/targets")
        assert code == 200, body
        targets = json.loads(body)["data"]["activeTargets"]
        if targets:
            break
        time.sleep(1)
    assert [(t["labels"]["job"], t["labels"]["instance"]) for t in targets] == [
        ("kthybrid", "kthybrid:30000")
    ]
