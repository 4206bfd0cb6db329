"""Reads the CycloneDX SBOM that every image carries, for `make sbom` and the checks."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import docker
import docker.errors

from builder.engine import connect
from builder.errors import BuildError

SBOM_PATH = "/usr/share/kthybrid/sbom.cdx.json"
SBOM_LABEL = "io.kthybrid.sbom"


def read_sbom(client: docker.DockerClient, image: str) -> dict[str, Any]:
    """The image's SBOM, read from a container that is created but never started."""
    try:
        labels = client.images.get(image).labels or {}
    except docker.errors.ImageNotFound:
        raise BuildError(f"image {image} is not built: run `make image`") from None
    path = labels.get(SBOM_LABEL)
    if path != SBOM_PATH:
        raise BuildError(
            f"image {image} names no SBOM at {SBOM_PATH} (label {SBOM_LABEL}={path!r}): it was "
            f"built before images carried one; rebuild it with `make image`"
        )
    container = client.containers.create(image, entrypoint=["true"], network_disabled=True)
    try:
        stream, _ = container.get_archive(SBOM_PATH)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.extractfile(Path(SBOM_PATH).name)
            if member is None:
                raise BuildError(f"{SBOM_PATH} in {image} is not a regular file")
            data: dict[str, Any] = json.loads(member.read())
    except docker.errors.NotFound:
        raise BuildError(
            f"image {image} has no {SBOM_PATH}: rebuild it with `make image`"
        ) from None
    finally:
        container.remove(force=True)
    return data


def extract_sbom(image: str, output: Path) -> str:
    """Write the image's SBOM to `output` (atomically); returns a one-line summary."""
    document = read_sbom(connect(), image)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    partial.replace(output)
    purls = [str(c.get("purl", "")) for c in document.get("components", [])]
    pypi = sum(p.startswith("pkg:pypi/") for p in purls)
    deb = sum(p.startswith("pkg:deb/") for p in purls)
    return f"CycloneDX {document.get('specVersion')}, {pypi} Python and {deb} Debian packages"
