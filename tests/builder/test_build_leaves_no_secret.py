"""A build with an index URL carrying user:password, and a site CA, leaves neither behind.

A real build of the build-only stages up to build-tools (the stage that installs packages from
the index; the image's stack layers fetch their secrets the same way, with the same script),
from no cache, through an index on the loopback that refuses any request without the
credentials. Then every image the build left, tagged or not, is read whole: `docker save` and
`docker history`. The full 10 GB image gets the same check in bench/reproducible.py.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from builder.build import BuildOptions, BuildResult, build_image
from builder.cli import default_ca_bundle
from builder.matrix import load_targets, load_versions
from tests.support.index_proxy import (
    AuthenticatingIndex,  # tests/builder is on the path (no package)
)
from tests.support.secret_scan import scan

REPOSITORY = "kthybrid-test-secrets"


def site_certificate(tmp_path: Path) -> str:
    """A fresh self-signed certificate: stands for a company's own CA in the bundle."""
    key, cert = tmp_path / "site.key", tmp_path / "site.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN=kthybrid-test-{secrets.token_hex(4)}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert.read_text()


@pytest.fixture(scope="module")
def built(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BuildResult, AuthenticatingIndex, list[bytes]]]:
    tmp_path = tmp_path_factory.mktemp("secrets")
    certificate = site_certificate(tmp_path)
    host_bundle = default_ca_bundle()
    assert host_bundle, "no CA bundle on this host to build with"
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(Path(host_bundle).read_text() + "\n" + certificate)
    password = secrets.token_hex(16)
    user = "kthybrid-ci"
    body = "".join(certificate.split("-----")[2].split())
    needles = [
        password.encode(),
        base64.b64encode(f"{user}:{password}".encode()),
        body[64:128].encode(),  # one line of the site certificate as PEM holds it
    ]
    target = load_targets()["sm120"]
    with AuthenticatingIndex(user, password) as index:
        options = BuildOptions(
            repository=REPOSITORY,
            index_url=index.url,
            ca_bundle=bundle,
            no_cache=True,
            stop_after="build-tools",
        )
        result = build_image(target, load_versions(), options, emit=lambda _line: None)
    try:
        yield result, index, needles
    finally:
        for tag in [
            t for i in docker_client.images.list(name=f"{REPOSITORY}-stage") for t in i.tags
        ]:
            docker_client.images.remove(tag)
        for image in reversed(result.created):
            try:
                docker_client.images.remove(image)
            except docker.errors.APIError:
                continue  # gone with a child already, or a parent of another image


def left_images(docker_client: docker.DockerClient, result: BuildResult) -> list[str]:
    stages = [
        tag for image in docker_client.images.list(name=f"{REPOSITORY}-stage") for tag in image.tags
    ]
    return sorted(set(stages) | set(result.created))


@pytest.mark.docker
def test_the_build_used_the_index_through_its_credentials(
    built: tuple[BuildResult, AuthenticatingIndex, list[bytes]],
) -> None:
    result, index, _ = built
    assert index.authorized > 0, "the build never asked the index: the secret was not used"
    assert result.cache_hits == 0 or result.steps > result.cache_hits


@pytest.mark.docker
def test_no_image_the_build_left_holds_the_password_or_the_site_ca(
    docker_client: docker.DockerClient, built: tuple[BuildResult, AuthenticatingIndex, list[bytes]]
) -> None:
    result, _, needles = built
    images = left_images(docker_client, result)
    assert any(name.endswith(":build-tools") for name in images), images
    for name in images:
        found = scan(docker_client.images.get(name).save(chunk_size=8 << 20), needles)
        assert found == [], f"{name} holds {found}"


@pytest.mark.docker
def test_no_history_entry_holds_them(
    docker_client: docker.DockerClient, built: tuple[BuildResult, AuthenticatingIndex, list[bytes]]
) -> None:
    result, index, needles = built
    for name in left_images(docker_client, result):
        history = subprocess.run(
            ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", name],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        assert scan([history], needles) == [], name
        assert str(index.port).encode() + b"/simple" not in history
