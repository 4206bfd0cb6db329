"""The tune profile: `kthybrid-serve tune` with the server's options, model and cache volume."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.compose_project import ComposeProject

Compose = Callable[..., ComposeProject]


@pytest.fixture
def config(compose: Compose) -> dict[str, Any]:
    services: dict[str, Any] = compose().config(["tune", "serve"])["services"]
    return services


def test_tune_runs_the_launchers_tune_once(config: dict[str, Any]) -> None:
    assert config["tune"]["command"] == ["tune"]
    assert config["tune"]["restart"] == "no"


def test_tune_stores_its_record_where_the_server_reads_it(config: dict[str, Any]) -> None:
    def cache(service: dict[str, Any]) -> str:
        (volume,) = [v for v in service["volumes"] if v["target"] == "/cache"]
        return str(volume["source"])

    assert cache(config["tune"]) == cache(config["server"])


def test_tune_plans_with_the_servers_options(config: dict[str, Any]) -> None:
    # The record matches only the host, model shape and method the server plans with.
    server = config["server"]["environment"]
    tune = config["tune"]["environment"]
    assert "KTHYBRID_KT_METHOD" in tune and "KTHYBRID_MODEL" in tune
    for name, value in tune.items():
        assert server[name] == value, name


def test_tune_reads_the_model_and_needs_no_gpu(config: dict[str, Any]) -> None:
    models = next(v for v in config["tune"]["volumes"] if v["target"] == "/models")
    assert models["read_only"] is True
    assert "deploy" not in config["tune"]
