"""The base images' digests: what a registry answers, what the local copies hold."""

from __future__ import annotations

import re

import docker
import docker.errors

from builder.engine import connect, content_digest, short_error
from builder.errors import MatrixError
from builder.matrix import VERSIONS_FILE, Versions


def _registry_digest(client: docker.DockerClient, name: str) -> tuple[str | None, str]:
    """(digest, None) when a registry answers for `name`, else (None, why not); no pull."""
    try:
        data = client.images.get_registry_data(name)
    except docker.errors.DockerException as error:
        return None, short_error(error)
    return str(data.id), ""


def _local(client: docker.DockerClient, name: str) -> str:
    try:
        image = client.images.get(name)
    except docker.errors.ImageNotFound:
        return "not here"
    origin = (image.labels or {}).get("io.kthybrid.base.origin", "pulled, or made without label")
    return f"here: content {content_digest(client, name)} ({origin})"


def record_digest(field: str, digest: str) -> None:
    """Set `images.<field>_digest` in versions.yaml, keeping every other line as it is."""
    text = VERSIONS_FILE.read_text(encoding="utf-8")
    pattern = re.compile(rf"^(  {field}_digest:) .*$", re.M)
    if not pattern.search(text):
        raise MatrixError(f"{VERSIONS_FILE} has no images.{field}_digest line to record into")
    VERSIONS_FILE.write_text(pattern.sub(rf"\g<1> {digest}", text, count=1), encoding="utf-8")


def describe_bases(versions: Versions, *, pull: bool, record: bool) -> list[str]:
    """One line per base image: recorded digest, registry digest (if one answers), local copy."""
    client = connect()
    lines = []
    for field, name, recorded in (
        ("base", versions.base_image, versions.base_digest),
        ("cuda_toolchain", versions.cuda_toolchain_image, versions.cuda_toolchain_digest),
    ):
        digest, why_not = (
            _registry_digest(client, name) if pull else (None, "not asked (--no-pull)")
        )
        answered = f"registry digest {digest}" if digest else f"no registry answered ({why_not})"
        lines.append(
            f"{field}: {name}: recorded {recorded or 'none'}; {answered}; {_local(client, name)}"
        )
        if record and digest and digest != recorded:
            record_digest(field, digest)
            lines.append(f"{field}: recorded {digest} in {VERSIONS_FILE.name}")
    return lines
