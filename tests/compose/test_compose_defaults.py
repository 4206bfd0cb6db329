"""The server's host settings as the defaults give them: one fact per test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.compose_project import ComposeProject

Compose = Callable[..., ComposeProject]


@pytest.fixture
def server(compose: Compose) -> dict[str, Any]:
    service: dict[str, Any] = compose().config(["serve"])["services"]["server"]
    return service


def test_gpus_are_reserved_through_the_nvidia_driver(server: dict[str, Any]) -> None:
    devices = server["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}]


def test_nothing_is_privileged(server: dict[str, Any]) -> None:
    assert not server.get("privileged")
    assert sorted(server["cap_add"]) == ["IPC_LOCK", "SYS_NICE"]


def test_memlock_defaults_to_unlimited(server: dict[str, Any]) -> None:
    assert server["ulimits"]["memlock"] == -1


def test_shm_is_sized(server: dict[str, Any]) -> None:
    assert int(server["shm_size"]) == 16 * 1024**3


def test_port_is_published_on_loopback(server: dict[str, Any]) -> None:
    (port,) = server["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "30000", 30000)


def test_model_dir_is_read_only(server: dict[str, Any]) -> None:
    models = next(v for v in server["volumes"] if v["target"] == "/models")
    assert models["read_only"] is True


def test_jit_caches_live_in_a_named_volume(server: dict[str, Any]) -> None:
    cache = next(v for v in server["volumes"] if v["target"] == "/cache")
    assert cache["type"] == "volume"


def test_health_check_waits_through_a_multi_minute_start(server: dict[str, Any]) -> None:
    check = server["healthcheck"]
    assert "/health" in " ".join(check["test"])
    assert check["start_period"] == "15m0s"


def test_server_restarts_unless_stopped(server: dict[str, Any]) -> None:
    assert server["restart"] == "unless-stopped"


def test_in_flight_requests_get_two_minutes(server: dict[str, Any]) -> None:
    assert server["stop_grace_period"] == "2m0s"


def test_mtp_profile_turns_mtp_on(compose: Compose) -> None:
    service = compose().config(["mtp"])["services"]["server-mtp"]
    assert service["environment"]["KTHYBRID_MTP"] == "true"


def test_hugepages_layer_asks_for_the_hugetlb_pool_and_mounts_nothing(compose: Compose) -> None:
    # glibc maps the expert buffers from the pool itself (MAP_HUGETLB): no hugetlbfs that
    # nothing would map (issue 11: reserving what nothing uses only takes RAM away).
    config = compose(COMPOSE_FILE="compose.yaml:compose.hugepages.yaml").config(["serve"])
    server = config["services"]["server"]
    assert server["environment"]["KTHYBRID_HUGEPAGES"] == "hugetlb"
    assert not any("hugepages" in str(v.get("target", "")) for v in server.get("volumes", []))
    assert "hugepages" not in (config.get("volumes") or {})


def test_no_gpu_layer_drops_the_reservation_only(compose: Compose) -> None:
    config = compose(COMPOSE_FILE="compose.yaml:compose.no-gpu.yaml").config(["serve"])
    server = config["services"]["server"]
    assert "devices" not in server["deploy"]["resources"].get("reservations", {})
    assert server["cap_add"]


def test_hf_token_comes_from_a_secret_file(compose: Compose) -> None:
    config = compose(HF_TOKEN_FILE="/run/hf-token").config(["download"])
    download = config["services"]["download"]
    assert config["secrets"]["hf_token"]["file"] == "/run/hf-token"
    assert download["environment"]["HF_TOKEN_PATH"] == "/run/secrets/hf_token"
    assert not any("HF_TOKEN=" in str(v) for v in download["environment"].values())
