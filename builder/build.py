"""Builds a target's image through the Docker SDK, with live progress, labels and tags."""

from __future__ import annotations

import io
import os
import queue
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

from builder.errors import BuildError, DockerUnavailableError
from builder.matrix import REPO_ROOT, Target, Versions
from builder.render import RenderedFile, check_rendered, dockerfile_path, render_dockerfile

CONTEXT_DIR = REPO_ROOT / "docker"
# What the Dockerfiles COPY from the context; nothing else is sent to the engine.
CONTEXT_PATHS = ("lock", "scripts", "launcher")
CONTEXT_EXCLUDE = re.compile(
    r"(^|/)(__pycache__|\.pytest_cache|\.mypy_cache|[^/]*\.egg-info|evidence|build)(/|$)"
)
STAGES = ("cuda-toolchain", "python-stack", "launcher-wheel")
HEARTBEAT_SECONDS = 30.0
# A build holds the Python stack twice while it runs (the build-only stage and the image's
# copy of /opt/venv), about 11 GB each, plus the apt layers.
DISK_NEEDED_BYTES = 25 * 10**9

Emit = Callable[[str], None]


@dataclass(frozen=True)
class BuildOptions:
    """Choices a user makes for one build; every field has an offline-safe default."""

    repository: str = "kthybrid"
    base_image: str | None = None
    cuda_toolchain_image: str | None = None
    index_url: str | None = None
    ca_bundle: Path | None = None
    pull: bool = True
    no_cache: bool = False


@dataclass
class BuildResult:
    image_id: str
    tags: list[str]
    base_image: str
    base_origin: str
    cuda_toolchain_image: str | None
    notes: list[str] = field(default_factory=list)


def image_tags(target: Target, versions: Versions, repository: str = "kthybrid") -> list[str]:
    """The deterministic tag first, then the moving one."""
    return [
        f"{repository}:{versions.version_of('sglang-kt')}-{versions.cuda_tag}-{target.name}",
        f"{repository}:{target.name}",
    ]


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as error:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise DockerUnavailableError(
            f"no Docker engine answers at {host} ({_short(error)}): start one with "
            f"`make engine` (installs and starts dockerd as root) or `sudo systemctl start docker`"
        ) from None
    return client


def _short(error: BaseException) -> str:
    if isinstance(error, docker.errors.APIError) and error.explanation:
        return str(error.explanation).strip()[:300]
    text = str(error).strip().splitlines()
    return text[-1][:200] if text else type(error).__name__


def check_disk(client: docker.DockerClient, repository: str, emit: Emit) -> None:
    """Refuse to start a build that would run out of disk halfway, when the engine is local."""
    root = str(client.info().get("DockerRootDir") or "/var/lib/docker")
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        emit(f"cannot read free space of {root} (remote engine?); not checked")
        return
    if free >= DISK_NEEDED_BYTES:
        return
    if _have_image(client, f"{repository}-stage:python-stack"):
        emit(
            f"WARNING: {free / 1e9:.1f} GB free under {root}: enough while the cached stages "
            f"serve, not for a rebuild of the Python stack (about {DISK_NEEDED_BYTES / 1e9:.0f} GB)"
        )
        return
    raise BuildError(
        f"only {free / 1e9:.1f} GB free under {root}; a build from scratch needs about "
        f"{DISK_NEEDED_BYTES / 1e9:.0f} GB: free space (`make clean-images` removes kthybrid's "
        f"images and cached stages, `docker system df` shows what else is there)"
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
        return _short(error)
    return None


def resolve_base(client: docker.DockerClient, name: str, pull: bool, emit: Emit) -> str:
    """Make sure the run-time base exists locally; say where it came from."""
    if not _have_image(client, name):
        reason = _pull(client, name, emit) if pull else "pulling disabled"
        if reason is not None:
            raise BuildError(
                f"base image {name} is not here and cannot be pulled ({reason}): make a local one "
                f"with `make offline-base` (debootstrap from the host's Debian mirror), or pass "
                f"--base-image MIRROR/{name} for a registry mirror"
            )
    labels: dict[str, str] = client.images.get(name).labels or {}
    return str(
        labels.get("io.kthybrid.base.origin", "from a registry, or made without kthybrid's label")
    )


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


def context_tar(ca_bundle: Path | None, dockerfile: str, dockerfile_text: str) -> io.BytesIO:
    """The build context: docker/'s copied paths, the Dockerfile, and build-secrets/.

    build-secrets/ is only ever copied into build-only stages.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add_bytes(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))

        def add_dir(name: str) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = 0
            tar.addfile(info)

        for top in CONTEXT_PATHS:
            root = CONTEXT_DIR / top
            paths = [root] if root.is_file() else sorted(root.rglob("*"))
            if root.is_dir():
                add_dir(top)
            for path in paths:
                relative = path.relative_to(CONTEXT_DIR).as_posix()
                if CONTEXT_EXCLUDE.search(relative):
                    continue
                if path.is_dir():
                    add_dir(relative)
                elif path.is_file():
                    mode = 0o755 if os.access(path, os.X_OK) else 0o644
                    add_bytes(relative, path.read_bytes(), mode)
        add_bytes(dockerfile, dockerfile_text.encode())
        add_dir("build-secrets")
        if ca_bundle is not None:
            add_bytes("build-secrets/ca.pem", ca_bundle.read_bytes())
    buffer.seek(0)
    return buffer


def _git_revision() -> str:
    try:
        revision = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "docker", "builder"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return revision + ("-dirty" if dirty else "")


class _Progress:
    """Turns the engine's stream into step lines, heartbeats, and the last lines for errors."""

    STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
    # The classic builder's own bookkeeping, not output of the step.
    NOISE = re.compile(r"^( ---> |Removing intermediate container |Successfully (built|tagged) )")

    def __init__(self, emit: Emit, label: str) -> None:
        self.emit = emit
        self.label = label
        self.started = time.monotonic()
        self.step_started = self.started
        self.step = "starting"
        self.last_report = self.started
        self.last_lines: deque[str] = deque(maxlen=20)

    def elapsed(self, since: float | None = None) -> str:
        seconds = int(time.monotonic() - (since if since is not None else self.started))
        return f"{seconds // 60}m{seconds % 60:02d}s"

    def line(self, text: str) -> None:
        for raw in text.splitlines():
            stripped = re.sub(r"\x1b\[[0-9;]*m", "", raw).rstrip()
            if not stripped:
                continue
            match = self.STEP.match(stripped)
            if match:
                self.step = f"step {match.group(1)}/{match.group(2)}: {match.group(3)[:90]}"
                self.step_started = self.last_report = time.monotonic()
                self.emit(f"[{self.label} {self.elapsed()}] {self.step}")
            elif not self.NOISE.match(stripped):
                self.last_lines.append(stripped)

    def heartbeat(self) -> None:
        self.last_report = time.monotonic()
        latest = f"; latest output: {self.last_lines[-1][:100]}" if self.last_lines else ""
        self.emit(
            f"[{self.label} {self.elapsed()}] still on {self.step} "
            f"({self.elapsed(self.step_started)} in this step{latest})"
        )


def _stream(chunks: Iterator[dict[str, Any]], progress: _Progress) -> str:
    """Consume the build stream with heartbeats; returns the image id."""
    events: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue()

    def reader() -> None:
        try:
            for chunk in chunks:
                events.put(chunk)
        except BaseException as error:  # handed to the main thread
            events.put(error)
        events.put(None)

    threading.Thread(target=reader, daemon=True).start()
    image_id = ""
    while True:
        # A heartbeat every HEARTBEAT_SECONDS without a new step, however chatty the step is.
        wait = HEARTBEAT_SECONDS - (time.monotonic() - progress.last_report)
        try:
            event = events.get(timeout=max(wait, 0.1))
        except queue.Empty:
            progress.heartbeat()
            continue
        if event is None:
            break
        if isinstance(event, BaseException):
            raise BuildError(f"the Docker engine stopped the build: {_short(event)}")
        if "error" in event:
            tail = "\n  ".join(progress.last_lines)
            raise BuildError(
                f"build failed at {progress.step}: {str(event['error']).strip()}\n"
                f"last lines:\n  {tail}"
            )
        if "stream" in event:
            progress.line(str(event["stream"]))
        aux = event.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = str(aux["ID"])
    if not image_id:
        raise BuildError(f"the engine ended the build without an image at {progress.step}")
    return image_id


def build_image(
    target: Target, versions: Versions, options: BuildOptions, emit: Emit | None = None
) -> BuildResult:
    """Build `target`'s image from its committed Dockerfile and tag it."""
    say: Emit = emit or (lambda text: print(text, file=sys.stderr, flush=True))
    dockerfile = dockerfile_path(target)
    rendered = render_dockerfile(target, versions)
    check_rendered([RenderedFile(dockerfile, rendered)])
    client = connect()
    check_disk(client, options.repository, say)
    base = options.base_image or versions.base_image
    base_origin = resolve_base(client, base, options.pull, say)
    say(f"run-time base: {base} ({base_origin})")
    toolchain, why_not = resolve_toolchain(
        client, options.cuda_toolchain_image or versions.cuda_toolchain_image, options.pull, say
    )
    notes = []
    if toolchain is None:
        notes.append(
            f"no CUDA toolchain image ({versions.cuda_toolchain_image}: {why_not}); building with "
            f"{base} in its place, so this image has NO nvcc. Compared with the production build "
            f"it lacks CUDA {versions.cuda}'s nvcc and headers, which run-time JIT compilation "
            f"needs (flashinfer JIT, sglang's jit_kernel, Marlin on sm89/sm120). NVRTC "
            f"{versions.cuda} from torch's wheels is present. Build where "
            f"{versions.cuda_toolchain_image} can be pulled (or pass --cuda-toolchain-image "
            f"MIRROR/...) for a production image."
        )
        for note in notes:
            say("NOTE: " + note)
    build_args = {
        "BASE_IMAGE": base,
        "CUDA_TOOLCHAIN_IMAGE": toolchain or base,
    }
    if options.index_url:
        build_args["PIP_INDEX_URL"] = options.index_url
    ca_bundle = options.ca_bundle
    if ca_bundle is not None and not ca_bundle.is_file():
        raise BuildError(f"CA bundle {ca_bundle} does not exist: pass an existing PEM file or none")
    labels = {
        "org.opencontainers.image.revision": _git_revision(),
        "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.base.name": base,
        "io.kthybrid.base.origin": base_origin,
        "io.kthybrid.cuda-toolchain-image": toolchain or f"none ({why_not})",
    }
    tags = image_tags(target, versions, options.repository)
    dockerfile_name = f"{target.name}/Dockerfile"
    # Stages are built and tagged first so their layers stay cached (an untagged stage result
    # would be pruned as dangling) and are shared between targets.
    for stage in (*STAGES, None):
        label = stage or target.name
        progress = _Progress(say, label)
        say(f"[{label}] building {'stage ' + stage if stage else 'image'}")
        chunks = client.api.build(
            fileobj=context_tar(ca_bundle, dockerfile_name, rendered),
            custom_context=True,
            dockerfile=dockerfile_name,
            buildargs=build_args,
            labels=labels if stage is None else None,
            target=stage,
            network_mode="host",
            rm=True,
            forcerm=True,
            nocache=options.no_cache,
            decode=True,
            pull=False,
        )
        image_id = _stream(chunks, progress)
        if stage is not None:
            client.api.tag(image_id, f"{options.repository}-stage", stage)
        say(f"[{label}] done in {progress.elapsed()}")
    for tag in tags:
        repository, _, name = tag.rpartition(":")
        client.api.tag(image_id, repository, name)
    pruned = client.images.prune(filters={"dangling": True})
    freed = int(pruned.get("SpaceReclaimed") or 0)
    if freed:
        say(f"removed dangling images: {freed / 1e9:.1f} GB freed")
    return BuildResult(image_id, tags, base, base_origin, toolchain, notes)
