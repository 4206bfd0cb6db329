"""Builds a target's image through the Docker SDK, with live progress, labels and tags.

The Docker SDK drives the engine's classic builder: it streams progress, tags, labels and
builds on the host network, and it is the only builder these machines have (no buildx). What
the classic builder cannot do is mount secrets, so they never go into the build's context or
arguments: builder.secret_server serves them on the loopback for the length of the build.
"""

from __future__ import annotations

import hashlib
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
import urllib.parse
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
from builder.render import (
    RenderedFile,
    check_rendered,
    dockerfile_path,
    render_dockerfile,
    render_layer_locks,
)
from builder.secret_server import ADDRESS_BUILD_ARG, serve_secrets

CONTEXT_DIR = REPO_ROOT / "docker"
# What the Dockerfiles COPY from the context; nothing else is sent to the engine.
CONTEXT_PATHS = ("lock", "scripts", "launcher")
CONTEXT_EXCLUDE = re.compile(
    r"(^|/)(__pycache__|\.pytest_cache|\.mypy_cache|[^/]*\.egg-info|evidence|build)(/|$)"
)
# Build-only stages, built and tagged <repository>-stage:<name> so that their layers stay
# cached (each is small: the run-time base plus a few MB); then the image, whose layers the
# final image shares, then the SBOM stage, which is removed once the image has its SBOM.
# Every stage is tagged as soon as it is built: an untagged result is "dangling", and any
# `docker image prune` on this engine (another build's clean-up) would delete it mid-build.
# The image and SBOM stages lose their tags at the end: the image has all of their layers.
CACHED_STAGES = ("cuda-toolchain", "build-inputs", "build-tools", "launcher")
IMAGE_STAGE = "image"
SBOM_STAGE = "sbom"
TRANSIENT_STAGES = (IMAGE_STAGE, SBOM_STAGE)
HEARTBEAT_SECONDS = 30.0
# The engine holds a layer twice while it commits it, so a build needs about the image's size
# plus its largest layer: ~9.7 GB + ~2 GB (stack_layers in versions.yaml), with room to spare.
DISK_NEEDED_BYTES = 15 * 10**9
# What decides the Python stack's content; its last commit's date is SOURCE_DATE_EPOCH, so a
# commit that changes only other files leaves every cached layer valid.
EPOCH_PATHS = ("docker/lock",)

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
    source_date_epoch: int | None = None
    # Build only up to this stage (one of CACHED_STAGES), as the cheap secrets test does.
    stop_after: str | None = None


@dataclass
class BuildResult:
    image_id: str
    tags: list[str]
    base_image: str
    base_origin: str
    cuda_toolchain_image: str | None
    source_date_epoch: int = 0
    base_content_digest: str = ""
    cache_hits: int = 0
    steps: int = 0
    # Every image a step of this build made that still exists when it ends (full ids).
    created: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def stage_tag(repository: str, stage: str) -> str:
    return f"{repository}-stage:{stage}"


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
        return _short(error)
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


# Why an image has no CUDA toolchain: the only texts its io.kthybrid.cuda-toolchain-image label
# may carry after "none" (no engine error, host name or address reaches a label).
TOOLCHAIN_NOT_ASKED = "asked for no CUDA toolchain image"
TOOLCHAIN_NOT_PULLED = "not here and pulling disabled"
TOOLCHAIN_PULL_FAILED = "not here and could not be pulled"
TOOLCHAIN_REASONS = (TOOLCHAIN_NOT_ASKED, TOOLCHAIN_NOT_PULLED, TOOLCHAIN_PULL_FAILED)


def resolve_toolchain(
    client: docker.DockerClient, name: str, pull: bool, emit: Emit
) -> tuple[str | None, str | None]:
    """The CUDA toolchain image to copy nvcc from, or None (with the reason) when unavailable."""
    if name == "none":
        return None, TOOLCHAIN_NOT_ASKED
    if _have_image(client, name):
        return name, None
    if not pull:
        return None, TOOLCHAIN_NOT_PULLED
    detail = _pull(client, name, emit)
    if detail is None:
        return name, None
    # The engine's text (resolver addresses, proxies, mirror names) goes to the build's
    # output only: the image's label records the reason, never build-host detail.
    emit(f"cannot pull {name}: {detail}")
    return None, TOOLCHAIN_PULL_FAILED


def context_tar(dockerfile: str, dockerfile_text: str) -> io.BytesIO:
    """The build context: docker/'s copied paths and the Dockerfile, every entry with time 0.

    No secret is ever in it (see builder.secret_server).
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
    buffer.seek(0)
    return buffer


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH for a build: the environment's, else the date of the last commit that
    changed what the Python stack is made of (EPOCH_PATHS)."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value:
        if not value.isdigit():
            raise BuildError(
                f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds since 1970: unset it or "
                f"give an integer"
            )
        return int(value)
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "log", "-1", "--format=%ct", "--", *EPOCH_PATHS],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out = ""
    if not out.isdigit():
        raise BuildError(
            f"cannot read the commit date of {', '.join(EPOCH_PATHS)} from git (not a git "
            f"checkout?): set SOURCE_DATE_EPOCH (seconds since 1970) for the build"
        )
    return int(out)


def check_index_url(url: str) -> None:
    """One clear line for an index URL that pip and uv would refuse halfway through a build."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise BuildError(
            f"--index-url {_redacted(url)!r} is not an http(s) URL of a package index: give one "
            f"like https://user:token@pypi.example.com/simple"
        )


def _redacted(url: str) -> str:
    """The URL with any password replaced, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


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
    """Turns the engine's stream into step lines, heartbeats, and the last lines for errors.

    A step is shown once it runs (its first output, or a heartbeat), not when the cache serves
    it: a build of the last stage lists every earlier stage's steps again, all from the cache.
    """

    STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
    CACHE_HIT = re.compile(r"^ ---> Using cache$")
    STEP_IMAGE = re.compile(r"^ ---> ([0-9a-f]{12})$")
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
        self.steps = 0
        self.cache_hits = 0
        self.pending = False
        # Images the steps of this build made (not those the cache served): short ids.
        self.created: list[str] = []
        self.from_cache = False
        self.step_is_from = False

    def elapsed(self, since: float | None = None) -> str:
        seconds = int(time.monotonic() - (since if since is not None else self.started))
        return f"{seconds // 60}m{seconds % 60:02d}s"

    def line(self, text: str) -> None:
        for raw in text.splitlines():
            stripped = re.sub(r"\x1b\[[0-9;]*m", "", raw).rstrip()
            if not stripped:
                continue
            if self.CACHE_HIT.match(stripped):
                self.cache_hits += 1
                self.pending = False
                self.from_cache = True
                continue
            image = self.STEP_IMAGE.match(stripped)
            if image:
                # FROM names an image that was there before (the base, an earlier stage).
                if not self.from_cache and not self.step_is_from:
                    self.created.append(image.group(1))
                self.from_cache = False
                continue
            match = self.STEP.match(stripped)
            if match:
                self.steps += 1
                self.step_is_from = match.group(3).upper().startswith("FROM ")
                self.step = f"step {match.group(1)}/{match.group(2)}: {match.group(3)[:90]}"
                self.step_started = self.last_report = time.monotonic()
                self.pending = True
            elif not self.NOISE.match(stripped):
                self._show_step()
                self.last_lines.append(stripped)

    def _show_step(self) -> None:
        if self.pending:
            self.pending = False
            self.emit(f"[{self.label} {self.elapsed()}] {self.step}")

    def summary(self) -> str:
        return f"{self.steps} steps, {self.cache_hits} from the cache"

    def heartbeat(self) -> None:
        self._show_step()
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
    if options.stop_after is not None and options.stop_after not in CACHED_STAGES:
        raise BuildError(
            f"cannot stop after {options.stop_after!r}: choose one of {', '.join(CACHED_STAGES)}"
        )
    if options.index_url:
        check_index_url(options.index_url)
    ca_bundle = options.ca_bundle
    if ca_bundle is not None and not ca_bundle.is_file():
        raise BuildError(f"CA bundle {ca_bundle} does not exist: pass an existing PEM file or none")
    epoch = (
        options.source_date_epoch if options.source_date_epoch is not None else source_date_epoch()
    )
    dockerfile = dockerfile_path(target)
    rendered = render_dockerfile(target, versions)
    check_rendered([RenderedFile(dockerfile, rendered), *render_layer_locks(versions)])
    client = connect()
    tags = image_tags(target, versions, options.repository)
    check_disk(client, tags[-1], say)
    base = options.base_image or versions.base_image_ref
    base_origin = resolve_base(client, base, options.pull, say)
    base_digest = content_digest(client, base)
    base_registry_digest = registry_digest(client, base)
    say(
        f"run-time base: {base} ({base_origin}); content {base_digest}"
        + (f", registry digest {base_registry_digest}" if base_registry_digest else "")
    )
    toolchain, why_not = resolve_toolchain(
        client,
        options.cuda_toolchain_image or versions.cuda_toolchain_image_ref,
        options.pull,
        say,
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
    revision = _git_revision()
    build_args = {
        "BASE_IMAGE": base,
        "CUDA_TOOLCHAIN_IMAGE": toolchain or base,
        "SOURCE_DATE_EPOCH": str(epoch),
    }
    labels = {
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.base.name": base,
        "io.kthybrid.base.origin": base_origin,
        "io.kthybrid.base.content-digest": base_digest,
        "io.kthybrid.source-date-epoch": str(epoch),
        "io.kthybrid.cuda-toolchain-image": toolchain or f"none ({why_not})",
    }
    if base_registry_digest:
        labels["org.opencontainers.image.base.digest"] = base_registry_digest
    secrets: dict[str, bytes] = {}
    if ca_bundle is not None:
        secrets["ca.pem"] = ca_bundle.read_bytes()
    if options.index_url:
        secrets["index-url"] = options.index_url.encode()
    if options.stop_after is not None:
        stages: tuple[str | None, ...] = CACHED_STAGES[
            : CACHED_STAGES.index(options.stop_after) + 1
        ]
    else:
        stages = (*CACHED_STAGES, IMAGE_STAGE, SBOM_STAGE, None)
    previous = _tagged_ids(
        client, [*tags, *(stage_tag(options.repository, s) for s in CACHED_STAGES)]
    )
    dockerfile_name = f"{target.name}/Dockerfile"
    # One snapshot of the context for every stage: an edit under docker/ while the build runs
    # must not give the stages different inputs.
    context = context_tar(dockerfile_name, rendered).getvalue()
    image_id = ""
    hits = steps = 0
    created: list[str] = []
    stage_ids: dict[str, str] = {}
    with serve_secrets(secrets) as secrets_url:
        for stage in stages:
            label = stage or target.name
            progress = _Progress(say, label)
            say(f"[{label}] building {'stage ' + stage if stage else 'image'}")
            args = {**build_args, ADDRESS_BUILD_ARG: secrets_url}
            if stage in (SBOM_STAGE, None):
                args["SOURCE_REVISION"] = revision
            chunks = client.api.build(
                fileobj=io.BytesIO(context),
                custom_context=True,
                dockerfile=dockerfile_name,
                buildargs=args,
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
            hits += progress.cache_hits
            steps += progress.steps
            created += progress.created
            if stage is not None:
                stage_ids[stage] = image_id
            if stage is not None:
                client.api.tag(image_id, f"{options.repository}-stage", stage)
            say(f"[{label}] done in {progress.elapsed()} ({progress.summary()})")
    if options.stop_after is None:
        for tag in tags:
            repository, _, name = tag.rpartition(":")
            client.api.tag(image_id, repository, name)
        for stage in TRANSIENT_STAGES:
            client.images.remove(stage_tag(options.repository, stage), noprune=True)
    # What no tag needs any more: the SBOM stage (the image plus the SBOM tools: not left
    # looking like a second image of the same size), stages a --no-cache build made again,
    # and the images and stages this build's tags pointed at before.
    sbom_stage = [stage_ids[SBOM_STAGE]] if SBOM_STAGE in stage_ids else []
    _remove_untagged(client, [*sbom_stage, *reversed(created), *previous], say)
    left = _existing_ids(client, created)
    return BuildResult(
        image_id,
        tags if options.stop_after is None else [stage_tag(options.repository, str(stages[-1]))],
        base,
        base_origin,
        toolchain,
        source_date_epoch=epoch,
        base_content_digest=base_digest,
        cache_hits=hits,
        steps=steps,
        created=left,
        notes=notes,
    )


def _existing_ids(client: docker.DockerClient, short_ids: list[str]) -> list[str]:
    found = []
    for short in dict.fromkeys(short_ids):
        try:
            found.append(str(client.images.get(short).id))
        except docker.errors.ImageNotFound:
            continue
    return found


def _tagged_ids(client: docker.DockerClient, names: list[str]) -> list[str]:
    ids = []
    for name in names:
        try:
            ids.append(str(client.images.get(name).id))
        except docker.errors.ImageNotFound:
            continue
    return ids


def _remove_untagged(client: docker.DockerClient, image_ids: list[str], say: Emit) -> None:
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
            if "child" not in _short(error):
                say(f"kept {image_id[:19]}: {_short(error)}")
            continue
        freed += 1
    if freed:
        say(f"removed {freed} images this build replaced or no longer needs")
