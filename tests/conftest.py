"""Shared by every test group: which image to test, and the one Docker client."""

from __future__ import annotations

import docker
import docker.errors
import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--image",
        action="store",
        default=None,
        help="kthybrid image to test, e.g. kthybrid:sm120 (image and compose tests need it)",
    )
    parser.addoption(
        "--arch",
        action="store",
        default=None,
        help="target the image was built for (default: its io.kthybrid.target label)",
    )


@pytest.fixture(scope="session")
def image_name(request: pytest.FixtureRequest) -> str:
    """The image under test; a test that needs one fails with a clear message when none is given."""
    name = request.config.getoption("--image")
    if not name:
        pytest.fail(
            "no image given: pass --image kthybrid:<target> (make test does)", pytrace=False
        )
    return str(name)


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    """The one client of the Docker engine every test group uses (one connection per session)."""
    try:
        client = docker.from_env(timeout=900)
        client.ping()
    except docker.errors.DockerException as error:
        pytest.fail(f"no Docker engine answers ({error}): run `make engine`", pytrace=False)
    return client
