"""The router image: sglang's router on the run-time base, rendered and built from the data.

The router is a Rust binary in a Python wheel (sglang-router) that proxies HTTP and runs on
the CPU, so its image is the Debian base with Python and the one hash lock
docker/lock/router.lock: no CUDA, no torch, no sglang-kt (about 150 MB instead of ~10 GB),
and a change to it never rebuilds the server image.
"""

from __future__ import annotations

import io
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from builder.context import check_index_url, source_date_epoch
from builder.engine import (
    Emit,
    connect,
    content_digest,
    remove_untagged,
    resolve_base,
    tagged_ids,
)
from builder.errors import BuildError
from builder.matrix import (
    PACKAGE_DIR,
    REPO_ROOT,
    VERSIONS_FILE,
    Requirement,
    Versions,
    _load_validated,
)
from builder.progress import Progress, stream_build
from builder.render import TEMPLATE_DIR, RenderedFile, check_rendered
from builder.secret_server import ADDRESS_BUILD_ARG, serve_secrets

ROUTER_DOCKERFILE = Path("docker") / "router" / "Dockerfile"
ROUTER_TEMPLATE = "router.Dockerfile.j2"
# What the router Dockerfile COPYs from docker/; nothing else is sent to the engine.
ROUTER_CONTEXT = (
    "lock/router.lock",
    "scripts/fixed-mtimes.sh",
    "scripts/with-build-secrets.sh",
    "scripts/install-tools.sh",
    "router/kthybrid_router.py",
)
ROUTER_PORT = 30000
ROUTER_METRICS_PORT = 29000


def load_router_requirements(path: Path = VERSIONS_FILE) -> tuple[Requirement, ...]:
    """versions.yaml's `router` requirements (schema-checked); one clear line if absent."""
    data = _load_validated(path, PACKAGE_DIR / "versions.schema.json")
    if "router" not in data:
        raise BuildError(f"{path} has no `router` section: restore it from git")
    return tuple(Requirement(**item) for item in data["router"]["requirements"])


def router_version(path: Path = VERSIONS_FILE) -> str:
    for requirement in load_router_requirements(path):
        if requirement.name == "sglang-router":
            return requirement.version
    raise BuildError(f"{path}: the `router` section does not pin sglang-router")


def router_image_tags(repository: str = "kthybrid") -> list[str]:
    """The deterministic tag first, then the moving one: kthybrid:router-0.3.2, kthybrid:router."""
    return [f"{repository}:router-{router_version()}", f"{repository}:router"]


def render_router_dockerfile(versions: Versions, root: Path = REPO_ROOT) -> RenderedFile:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    text = environment.get_template(ROUTER_TEMPLATE).render(
        versions=versions,
        requirements=load_router_requirements(),
        router_version=router_version(),
        port=ROUTER_PORT,
        metrics_port=ROUTER_METRICS_PORT,
    )
    return RenderedFile(root / ROUTER_DOCKERFILE, text, root)


def router_context(dockerfile_text: str) -> bytes:
    """The build context: the few files the router Dockerfile copies, every entry with time 0."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for relative in (*ROUTER_CONTEXT, "router/Dockerfile"):
            if relative == "router/Dockerfile":
                data = dockerfile_text.encode()
                mode = 0o644
            else:
                path = REPO_ROOT / "docker" / relative
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    raise BuildError(
                        f"{path} does not exist: run `python -m builder lock --only router` "
                        f"or restore it from git"
                    ) from None
                mode = 0o755 if relative.endswith(".sh") else 0o644
            info = tarfile.TarInfo(relative)
            info.size = len(data)
            info.mode = mode
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_router_image(
    versions: Versions,
    *,
    repository: str = "kthybrid",
    base_image: str | None = None,
    index_url: str | None = None,
    ca_bundle: Path | None = None,
    pull: bool = True,
    emit: Emit | None = None,
) -> list[str]:
    """Build the router image from its committed Dockerfile; returns its tags."""
    say: Emit = emit or (lambda text: print(text, file=sys.stderr, flush=True))
    if index_url:
        check_index_url(index_url)
    if ca_bundle is not None and not ca_bundle.is_file():
        raise BuildError(f"CA bundle {ca_bundle} does not exist: pass an existing PEM file or none")
    rendered = render_router_dockerfile(versions)
    check_rendered([rendered])
    client = connect()
    base = base_image or versions.base_image_ref
    origin = resolve_base(client, base, pull, say)
    tags = router_image_tags(repository)
    previous = tagged_ids(client, tags)
    secrets: dict[str, bytes] = {}
    if ca_bundle is not None:
        secrets["ca.pem"] = ca_bundle.read_bytes()
    if index_url:
        secrets["index-url"] = index_url.encode()
    labels = {
        "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.base.name": base,
        "io.kthybrid.base.origin": origin,
        "io.kthybrid.base.content-digest": content_digest(client, base),
    }
    progress = Progress(say, "router")
    with serve_secrets(secrets) as secrets_url:
        chunks = client.api.build(
            fileobj=io.BytesIO(router_context(rendered.text)),
            custom_context=True,
            dockerfile="router/Dockerfile",
            buildargs={
                "BASE_IMAGE": base,
                "SOURCE_DATE_EPOCH": str(source_date_epoch()),
                ADDRESS_BUILD_ARG: secrets_url,
            },
            labels=labels,
            network_mode="host",
            rm=True,
            forcerm=True,
            decode=True,
            pull=False,
        )
        image_id = stream_build(chunks, progress)
    for tag in tags:
        name, _, tag_name = tag.rpartition(":")
        client.api.tag(image_id, name, tag_name)
    remove_untagged(client, [*reversed(progress.created), *previous], say)
    say(f"[router] done in {progress.elapsed()} ({progress.summary()})")
    return tags
