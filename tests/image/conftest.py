"""Fixtures for checks of a built image: the Docker client, the image, its target, containers.

Every container these fixtures start carries the label io.kthybrid.test and is removed when
its fixture ends, whatever the test's outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.models.containers
import docker.models.images
import docker.types
import pytest
import testinfra

from builder.matrix import Target, load_targets

SCRIPT_DIR = Path(__file__).parent / "scripts"
TEST_LABEL = {"io.kthybrid.test": "image"}


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The last line of stdout that parses as JSON (scripts print one object)."""
        for line in reversed(self.stdout.strip().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise AssertionError(f"no JSON on stdout; stdout={self.stdout!r} stderr={self.stderr!r}")


@pytest.fixture(scope="session")
def image(docker_client: docker.DockerClient, image_name: str) -> docker.models.images.Image:
    try:
        return docker_client.images.get(image_name)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {image_name} is not built: run `make image`", pytrace=False)


@pytest.fixture(scope="session")
def target(image: docker.models.images.Image, request: pytest.FixtureRequest) -> Target:
    """The target the image was built for, from --arch or the image's label."""
    name = request.config.getoption("--arch") or image.labels.get("io.kthybrid.target")
    if not name:
        pytest.fail("the image has no io.kthybrid.target label; pass --arch", pytrace=False)
    return load_targets()[str(name)]


@pytest.fixture(scope="session")
def repository(image_name: str) -> str:
    """The repository the image under test was built under (kthybrid, or a test's own)."""
    return image_name.rpartition(":")[0] if ":" in image_name else image_name


@pytest.fixture(scope="session")
def read_only_run(run_in_image: Any) -> Any:
    """Run like the chart and compose do: read-only root file system, /tmp a tmpfs, and /cache
    and HOME volumes (anonymous, filled from the image and removed with the container)."""

    def run(command: list[str], **kwargs: Any) -> RunResult:
        result: RunResult = run_in_image(
            command,
            read_only=True,
            tmpfs={"/tmp": "rw,exec"},
            mounts=[
                docker.types.Mount(target="/cache", source=None, type="volume"),
                docker.types.Mount(target="/home/kthybrid", source=None, type="volume"),
            ],
            **kwargs,
        )
        return result

    return run


@pytest.fixture(scope="session")
def image_env(image: docker.models.images.Image) -> dict[str, str]:
    env = image.attrs["Config"].get("Env") or []
    return dict(item.split("=", 1) for item in env)


@pytest.fixture(scope="session")
def run_in_image(docker_client: docker.DockerClient, image: docker.models.images.Image) -> Any:
    """Run one command in a fresh container of the image (entrypoint bypassed) and remove it."""

    def run(
        command: list[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        volumes: dict[str, dict[str, str]] | None = None,
        entrypoint: list[str] | None = None,
        timeout: int = 300,
        shm_size: str | None = None,
        read_only: bool = False,
        tmpfs: dict[str, str] | None = None,
        mounts: list[docker.types.Mount] | None = None,
    ) -> RunResult:
        container = docker_client.containers.run(
            image.id,
            command=command,
            entrypoint=entrypoint if entrypoint is not None else [],
            user=user,
            environment=env,
            volumes=volumes,
            labels=TEST_LABEL,
            detach=True,
            network_mode="none",
            shm_size=shm_size,
            read_only=read_only,
            tmpfs=tmpfs,
            mounts=mounts,
        )
        try:
            status = container.wait(timeout=timeout)
            stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
            stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
            return RunResult(int(status["StatusCode"]), stdout, stderr)
        finally:
            container.remove(force=True, v=True)

    return run


@pytest.fixture(scope="session")
def run_script(run_in_image: Any) -> Any:
    """Run one of tests/image/scripts in the image, mounted read-only at /checks."""

    def run(script: str, *args: str, **kwargs: Any) -> RunResult:
        volumes = {str(SCRIPT_DIR): {"bind": "/checks", "mode": "ro"}}
        result: RunResult = run_in_image(
            ["python", f"/checks/{script}", *args], volumes=volumes, **kwargs
        )
        return result

    return run


@pytest.fixture(scope="module")
def idle_container(
    docker_client: docker.DockerClient, image: docker.models.images.Image
) -> Iterator[docker.models.containers.Container]:
    """A container of the image that idles under tini, for several file-system checks."""
    container = docker_client.containers.run(
        image.id,
        entrypoint=["/usr/bin/tini", "--"],
        command=["sleep", "infinity"],
        labels=TEST_LABEL,
        detach=True,
        network_mode="none",
    )
    try:
        yield container
    finally:
        container.remove(force=True, v=True)


@pytest.fixture(scope="module")
def host(idle_container: docker.models.containers.Container) -> Any:
    """A testinfra host bound to the idle container."""
    return testinfra.get_host(f"docker://{idle_container.id}")
