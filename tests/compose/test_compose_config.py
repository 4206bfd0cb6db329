"""`docker compose config` accepts every ARCH with every profile and layer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from builder.matrix import TARGETS_FILE, load_targets, load_versions
from builder.render import render_all
from tests.support.compose_project import ARCHES, COMPOSE_DIR, LAYERS, PROFILES, ComposeProject

EXTRA_TARGET_DATA = Path(__file__).resolve().parents[1] / "builder" / "data" / "sm86-target.yaml"

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


def test_an_extra_target_in_the_data_is_accepted_as_arch(tmp_path: Path) -> None:
    """Adding a target is a data change only: the builder renders arch/<target>.env and
    compose takes the new ARCH without an edit."""
    data = yaml.safe_load(TARGETS_FILE.read_text())
    data["targets"]["sm86"] = yaml.safe_load(EXTRA_TARGET_DATA.read_text())
    targets_file = tmp_path / "targets.yaml"
    targets_file.write_text(yaml.safe_dump(data, allow_unicode=True))
    tree = tmp_path / "tree"
    shutil.copytree(COMPOSE_DIR, tree / "compose", ignore=shutil.ignore_patterns("arch"))
    for item in render_all(load_targets(targets_file), load_versions(), root=tree):
        if item.relative.startswith("compose/"):
            item.path.parent.mkdir(parents=True, exist_ok=True)
            item.path.write_text(item.text)
    project = ComposeProject(env_dir=tmp_path, compose_dir=tree / "compose")
    project.set(ARCH="sm86", MODELS_DIR=str(tmp_path))
    services = project.config(PROFILES)["services"]
    assert {s["image"] for s in services.values()} == {"kthybrid:sm86"}
