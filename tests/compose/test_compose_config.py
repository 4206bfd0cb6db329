"""`docker compose config` accepts every ARCH with every profile and layer."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from compose_project import ARCHES, LAYERS, PROFILES, ComposeProject

Compose = Callable[..., ComposeProject]


@pytest.mark.parametrize("arch", ARCHES)
def test_every_profile_together_is_valid(compose: Compose, arch: str) -> None:
    config = compose(ARCH=arch).config(["download", "convert", "chat", "mtp"])
    assert set(config["services"]) == {"download", "convert", "chat", "server-mtp"}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("arch", ARCHES)
def test_each_profile_is_valid(compose: Compose, arch: str, profile: str) -> None:
    config = compose(ARCH=arch).config([profile])
    assert config["services"], f"profile {profile} selects no service"


@pytest.mark.parametrize("arch", ARCHES)
def test_image_is_chosen_by_arch(compose: Compose, arch: str) -> None:
    services = compose(ARCH=arch).config(PROFILES)["services"]
    assert {s["image"] for s in services.values()} == {f"kthybrid:{arch}"}


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("arch", ARCHES)
def test_each_layer_is_valid_with_every_profile(compose: Compose, arch: str, layer: str) -> None:
    project = compose(ARCH=arch, COMPOSE_FILE=f"compose.yaml:{layer}", GPU_DEVICE_IDS="0,1")
    assert project.config(PROFILES)["services"]


def test_plain_up_starts_only_the_server(compose: Compose) -> None:
    project = compose()
    listed = project.run(["config", "--services"]).stdout.split()
    assert listed == ["server"]


def test_mtp_profile_replaces_the_server(compose: Compose) -> None:
    project = compose()
    listed = project.run(["--profile", "mtp", "config", "--services"]).stdout.split()
    assert listed == ["server-mtp"]


def test_compose_files_pass_yamllint() -> None:
    import subprocess
    import sys

    from compose_project import COMPOSE_DIR

    subprocess.run(
        [
            sys.executable,
            "-m",
            "yamllint",
            "--strict",
            "-c",
            str(COMPOSE_DIR.parent / ".yamllint.yaml"),
            str(COMPOSE_DIR),
        ],
        check=True,
    )
