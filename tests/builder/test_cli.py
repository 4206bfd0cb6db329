"""The builder's command line: one line and exit code 1 for every error, never a traceback."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from collections.abc import Iterator

import docker
import docker.errors
import pytest

from builder.matrix import REPO_ROOT, load_targets


def run_builder(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=600,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("builder: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0]
    return errors[0]


def test_list_names_every_target_and_its_image_tag() -> None:
    result = run_builder("list")
    assert result.returncode == 0
    for name in load_targets():
        assert f"kthybrid:0.7.2-cu128-{name}" in result.stdout


def test_list_names_prints_the_targets_for_the_makefile() -> None:
    result = run_builder("list", "--names")
    assert result.returncode == 0
    assert result.stdout.split() == list(load_targets())


def test_render_check_passes_on_the_committed_tree() -> None:
    result = run_builder("render", "--check")
    assert result.returncode == 0, result.stderr


def test_unknown_arch_lists_the_valid_ones() -> None:
    result = run_builder("build", "--arch", "sm70")
    assert_one_line_error(result, "unknown ARCH 'sm70'", ", ".join(load_targets()))


def test_no_docker_daemon_says_how_to_start_one() -> None:
    env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock", "PATH": "/usr/bin:/bin"}
    result = run_builder("build", "--arch", "sm120", env=env)
    assert_one_line_error(result, "no Docker engine answers", "make engine")


@pytest.mark.docker
def test_base_that_cannot_be_pulled_says_how_to_use_a_local_or_mirrored_one(
    docker_client: docker.DockerClient,
) -> None:
    result = run_builder(
        "build", "--arch", "sm120", "--base-image", "kthybrid-test-missing:base", "--no-pull"
    )
    assert_one_line_error(result, "cannot be pulled", "make offline-base", "--base-image")


@pytest.fixture
def base_without_a_shell(docker_client: docker.DockerClient) -> Iterator[str]:
    """A real, empty image: any RUN step of a build on it fails."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("etc/empty")
        tar.addfile(info, io.BytesIO(b""))
    name = "kthybrid-test-empty:base"
    docker_client.api.import_image_from_data(
        buffer.getvalue(), repository=name.split(":")[0], tag="base"
    )
    try:
        yield name
    finally:
        docker_client.images.remove(name, force=True)


@pytest.mark.docker
def test_failed_build_step_shows_the_step_and_its_last_lines(base_without_a_shell: str) -> None:
    result = run_builder(
        "build",
        "--arch",
        "sm120",
        "--base-image",
        base_without_a_shell,
        "--cuda-toolchain-image",
        "none",
        "--no-pull",
        "--repository",
        "kthybrid-test-failed",
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "build failed at step" in result.stderr
    assert "collect-cuda-toolchain.sh" in result.stderr


def test_an_index_url_that_is_not_one_is_refused_without_echoing_its_password() -> None:
    result = run_builder("build", "--arch", "sm120", "--index-url", "ftp://me:hunter2@host/simple")
    line = assert_one_line_error(result, "is not an http(s) URL of a package index")
    assert "hunter2" not in result.stderr + result.stdout
    assert "me:***@host" in line


@pytest.mark.docker
def test_sbom_of_an_image_that_is_not_built_says_how_to_build_it(
    docker_client: docker.DockerClient,
) -> None:
    result = run_builder("sbom", "--arch", "sm120", "--repository", "kthybrid-test-absent")
    assert_one_line_error(result, "kthybrid-test-absent:sm120 is not built", "make image")


@pytest.mark.docker
def test_bases_reports_each_base_and_the_local_content_digest(
    docker_client: docker.DockerClient,
) -> None:
    result = run_builder("bases", "--no-pull")
    assert result.returncode == 0, result.stderr
    base, toolchain = result.stdout.splitlines()
    assert base.startswith("base: debian:bookworm-slim: recorded none; ")
    assert toolchain.startswith("cuda_toolchain: nvidia/cuda:12.8.1-devel-ubuntu22.04: ")
    if "here: content sha256:" in base:
        digest = base.split("here: content ", 1)[1].split()[0]
        layers = docker_client.images.get("debian:bookworm-slim").attrs["RootFS"]["Layers"]
        assert len(layers) > 1 or digest == layers[0]
