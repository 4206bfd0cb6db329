"""The Docker engine side of a build: connecting, disk space, base and toolchain images,
and removing what a build replaced."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable

import docker
import docker.errors

from builder.errors import BuildError, DockerUnavailableError

Emit = Callable[[str], None]
# The engine holds a layer twice while it commits it, so a build needs about the image's size
# plus its largest layer: ~9.7 GB + ~2 GB (stack_layers in versions.yaml), with room to spare.
DISK_NEEDED_BYTES = 15 * 10**9


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as error:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise DockerUnavailableError(
            f"no Docker engine answers at {host} ({short_error(error)}): start one with "
            f"`make engine` (installs and starts dockerd as root) or `sudo systemctl start docker`"
        ) from None
    return client


def short_error(error: BaseException) -> str:
    if isinstance(error, docker.errors.APIError) and error.explanation:
        return str(error.explanation).strip()[:300]
    text = str(error).strip().splitlines()
    return text[-1][:200] if text else type(error).__name__


def check_disk(client: docker.DockerClient, cached_image: str, emit: Emit) -> None:
    """Refuse to start a build that would run out of disk halfway, when the engine is local."""
    root = str(client.info().get("DockerRootDir") or "/var/lib/docker")
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        emit(f"cannot read free space of {root} (remote engine?); not checked")
        return
    if free >= DISK_NEEDED_BYTES:
        return
    if _have_image(client, cached_image):
        emit(
            f"WARNING: {free / 1e9:.1f} GB free under {root}: enough while the layers of "
            f"{cached_image} serve from the cache, not for a build from scratch (about "
            f"{DISK_NEEDED_BYTES / 1e9:.0f} GB)"
        )
        return
    raise BuildError(
        f"only {free / 1e9:.1f} GB free under {root}; a build from scratch needs about "
        f"{DISK_NEEDED_BYTES / 1e9:.0f} GB: free space (`make clean-images` removes this "
        f"repository's images and cached stages, `docker system df` shows what else is there)"
    )


def _have_image(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def _pull(client: docker.DockerClient, name: str, emit: Emit) -> str | None:
    """Pull `name`; returns None on success or the reason it failed."""
    emit(f"pulling {name}")
    try:
        client.images.pull(name)
    except docker.errors.DockerException as error:
        return short_error(error)
    return None


def resolve_base(client: docker.DockerClient, name: str, pull: bool, emit: Emit) -> str:
    """Make sure the run-time base exists locally; say where it came from.

    `name` may carry a registry digest (name@sha256:...): only those exact bytes will do.
    """
    if not _have_image(client, name):
        reason = _pull(client, name, emit) if pull else "pulling disabled"
        if reason is not None:
            plain = name.split("@", 1)[0]
            hint = (
                f"the digest recorded in builder/versions.yaml pins a registry's image: build "
                f"where it can be pulled, or pass --base-image {plain} to use a local base "
                f"(`make offline-base` makes one)"
                if "@" in name
                else f"make a local one with `make offline-base` (debootstrap from the host's "
                f"Debian mirror), or pass --base-image MIRROR/{name} for a registry mirror"
            )
            raise BuildError(
                f"base image {name} is not here and cannot be pulled ({reason}): {hint}"
            )
    labels: dict[str, str] = client.images.get(name).labels or {}
    return str(
        labels.get("io.kthybrid.base.origin", "from a registry, or made without kthybrid's label")
    )


def content_digest(client: docker.DockerClient, name: str) -> str:
    """The OCI ChainID of an image's layers: names its file-system content, whatever its
    config or tag says. For a one-layer base made offline it is the sha256 of its root file
    system's tar."""
    layers = [str(layer) for layer in client.images.get(name).attrs["RootFS"]["Layers"]]
    chain = layers[0]
    for layer in layers[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {layer}".encode()).hexdigest()
    return chain


def registry_digest(client: docker.DockerClient, name: str) -> str | None:
    """The registry digest a pulled image carries (sha256:...), or None for a local one."""
    for repo_digest in client.images.get(name).attrs.get("RepoDigests") or []:
        return str(repo_digest).split("@", 1)[1]
    return None


def resolve_toolchain(
    client: docker.DockerClient, name: str, pull: bool, emit: Emit
) -> tuple[str | None, str | None]:
    """The CUDA toolchain image to copy nvcc from, or None (with the reason) when unavailable."""
    if name == "none":
        return None, "asked for no CUDA toolchain image"
    if _have_image(client, name):
        return name, None
    reason = _pull(client, name, emit) if pull else "pulling disabled"
    if reason is None:
        return name, None
    return None, reason


def existing_ids(client: docker.DockerClient, short_ids: list[str]) -> list[str]:
    found = []
    for short in dict.fromkeys(short_ids):
        try:
            found.append(str(client.images.get(short).id))
        except docker.errors.ImageNotFound:
            continue
    return found


def tagged_ids(client: docker.DockerClient, names: list[str]) -> list[str]:
    ids = []
    for name in names:
        try:
            ids.append(str(client.images.get(name).id))
        except docker.errors.ImageNotFound:
            continue
    return ids


def remove_untagged(client: docker.DockerClient, image_ids: list[str], say: Emit) -> None:
    """Remove images of this build's own that no tag names any more (an earlier build's image
    or stage, the SBOM stage), and only those: never the engine's other dangling images, which
    may be another build's work in progress."""
    freed = 0
    for image_id in dict.fromkeys(image_ids):
        try:
            image = client.images.get(image_id)
        except docker.errors.ImageNotFound:
            continue
        if image.tags:
            continue
        try:
            client.images.remove(image_id, noprune=False)
        except docker.errors.APIError as error:
            # Still the parent of another image (an ancestor of what the tags name), or used
            # by a container: it stays.
            if "child" not in short_error(error):
                say(f"kept {image_id[:19]}: {short_error(error)}")
            continue
        freed += 1
    if freed:
        say(f"removed {freed} images this build replaced or no longer needs")
