"""A bad .env stops `docker compose` with a message naming the bad setting."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.compose_project import ComposeProject

Compose = Callable[..., ComposeProject]


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("ARCH", "sm75", "arch/sm75.env not found"),
        ("ARCH", "", "ARCH is not set"),
        ("MODELS_DIR", "", "MODELS_DIR is not set"),
        ("SHM_SIZE", "lots", "shm_size' invalid size: 'lots'"),
        ("MEMLOCK", "unlimited", 'strconv.Atoi: parsing "unlimited"'),
        ("GPU_COUNT", "two", "the only value allowed is 'all' or a number"),
        ("STOP_GRACE_PERIOD", "soon", 'invalid duration "soon"'),
        ("HEALTH_START_PERIOD", "long", 'invalid duration "long"'),
        ("HOST_PORT", "http", "invalid hostPort: http"),
    ],
)
def test_bad_setting_stops_with_its_name(
    compose: Compose, setting: str, value: str, message: str
) -> None:
    result = compose(**{setting: value}).run(["config", "--quiet"], check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_gpu_ids_layer_needs_ids(compose: Compose) -> None:
    project = compose(COMPOSE_FILE="compose.yaml:compose.gpu-ids.yaml", GPU_DEVICE_IDS="")
    result = project.run(["config", "--quiet"], check=False)
    assert "GPU_DEVICE_IDS is not set" in result.stderr
