"""Session fixtures of the registry tests: two real registries on the loopback, one push each.

Which image is pushed: the full image (9.6 GB, 15 layers, 5.2 GB in the registry) took 702,
1218 and 842 s to push cold on the shared 2-core machine (bench/push.py measures it; the engine
gzips every layer), far over the few minutes a test session may spend. So the round trip
pushes a small image that the builder itself builds (its `build-inputs` stage, ~107 MB, cached
by `make image`), and the SBOM it carries to the registry is the real image's own file, byte
for byte. The same code pushes both.
"""

from __future__ import annotations

import io
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from registry_helpers import USER, Pushed

from builder.build import BuildOptions, build_image
from builder.chart_push import ChartPush, push_chart
from builder.cli import default_ca_bundle
from builder.matrix import load_targets, load_versions
from builder.push import Credentials, push_image
from builder.sbom import SBOM_PATH
from tests.support.local_registry import INSTALL_SCRIPT, LocalRegistry, local_registry

TEST_REPOSITORY = "kthybrid-registry-test"
SMALL_STAGE = "build-inputs"


@pytest.fixture(scope="session")
def registry_installed() -> None:
    result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"tools/docker-registry.sh failed:\n{result.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def password() -> str:
    return secrets.token_hex(16)


@pytest.fixture(scope="session")
def plain_registry(
    registry_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalRegistry]:
    with local_registry(tmp_path_factory.mktemp("registry-plain")) as registry:
        yield registry


@pytest.fixture(scope="session")
def auth_registry(
    registry_installed: None, tmp_path_factory: pytest.TempPathFactory, password: str
) -> Iterator[LocalRegistry]:
    """htpasswd behind TLS. Distribution 2.8 would take htpasswd over plain HTTP too (it does
    not refuse to start), but then the password crosses the wire in the clear."""
    root = tmp_path_factory.mktemp("registry-auth")
    with local_registry(root, USER, password, tls=True) as registry:
        yield registry


@pytest.fixture(scope="session")
def credentials(password: str) -> Credentials:
    return Credentials(USER, password)


@pytest.fixture(scope="session")
def small_image(docker_client: docker.DockerClient) -> Iterator[str]:
    """The builder's build-inputs stage under this group's own name (cached by `make image`)."""
    ca = default_ca_bundle()
    options = BuildOptions(
        repository=TEST_REPOSITORY,
        ca_bundle=Path(ca) if ca else None,
        pull=False,
        stop_after=SMALL_STAGE,
    )
    result = build_image(load_targets()["sm120"], load_versions(), options, emit=lambda _: None)
    name = f"{TEST_REPOSITORY}-stage:{SMALL_STAGE}"
    try:
        yield name
    finally:
        for image in docker_client.images.list(name=f"{TEST_REPOSITORY}-stage"):
            for tag in image.tags:
                docker_client.images.remove(tag, noprune=True)
        for created in reversed(result.created):
            try:
                docker_client.images.remove(created)
            except docker.errors.APIError:
                continue  # still used by another image


@pytest.fixture(scope="session")
def pushed(
    docker_client: docker.DockerClient, small_image: str, plain_registry: LocalRegistry
) -> Pushed:
    first = push_image(docker_client, small_image, plain_registry.host, emit=lambda _: None)
    second = push_image(docker_client, small_image, plain_registry.host, emit=lambda _: None)
    return Pushed(plain_registry, first, second)


@pytest.fixture(scope="session")
def image_sbom(docker_client: docker.DockerClient, image_name: str) -> bytes:
    """The real image's SBOM file, as its bytes (read from a container never started)."""
    container = docker_client.containers.create(
        image_name, entrypoint=["true"], network_disabled=True
    )
    try:
        stream, _ = container.get_archive(SBOM_PATH)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.extractfile(Path(SBOM_PATH).name)
            assert member is not None, f"{SBOM_PATH} in {image_name} is not a file"
            return member.read()
    finally:
        container.remove(force=True)


@pytest.fixture(scope="session")
def chart_plain(
    plain_registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory
) -> ChartPush:
    return push_chart(plain_registry.host, tmp_path_factory.mktemp("chart-plain"))
