"""Builds a target's image through the Docker SDK, with live progress, labels and tags.

The Docker SDK drives the engine's classic builder: it streams progress, tags, labels and
builds on the host network, and it is the only builder these machines have (no buildx). What
the classic builder cannot do is mount secrets, so they never go into the build's context or
arguments: builder.secret_server serves them on the loopback for the length of the build.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import docker

from builder.context import check_index_url, context_tar, git_revision, source_date_epoch
from builder.engine import (
    Emit,
    check_disk,
    connect,
    content_digest,
    existing_ids,
    registry_digest,
    remove_untagged,
    resolve_base,
    resolve_toolchain,
    tagged_ids,
)
from builder.errors import BuildError
from builder.matrix import Target, Versions
from builder.progress import Progress, stream_build
from builder.render import (
    RenderedFile,
    check_rendered,
    dockerfile_path,
    render_dockerfile,
    render_layer_locks,
)
from builder.secret_server import ADDRESS_BUILD_ARG, serve_secrets

__all__ = ["BuildOptions", "BuildResult", "build_image", "connect", "image_tags", "stage_tag"]

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


@dataclass(frozen=True)
class _Inputs:
    """What a build starts from, resolved against the engine."""

    epoch: int
    base: str
    base_origin: str
    base_digest: str
    base_registry_digest: str | None
    toolchain: str | None
    why_not: str | None
    notes: list[str]


def _check_options(options: BuildOptions) -> None:
    if options.stop_after is not None and options.stop_after not in CACHED_STAGES:
        raise BuildError(
            f"cannot stop after {options.stop_after!r}: choose one of {', '.join(CACHED_STAGES)}"
        )
    if options.index_url:
        check_index_url(options.index_url)
    ca_bundle = options.ca_bundle
    if ca_bundle is not None and not ca_bundle.is_file():
        raise BuildError(f"CA bundle {ca_bundle} does not exist: pass an existing PEM file or none")


def _resolve_inputs(
    client: docker.DockerClient, versions: Versions, options: BuildOptions, epoch: int, say: Emit
) -> _Inputs:
    """The run-time base and the CUDA toolchain image (or why there is none)."""
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
    return _Inputs(
        epoch, base, base_origin, base_digest, base_registry_digest, toolchain, why_not, notes
    )


def _labels(inputs: _Inputs, revision: str) -> dict[str, str]:
    labels = {
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.base.name": inputs.base,
        "io.kthybrid.base.origin": inputs.base_origin,
        "io.kthybrid.base.content-digest": inputs.base_digest,
        "io.kthybrid.source-date-epoch": str(inputs.epoch),
        "io.kthybrid.cuda-toolchain-image": inputs.toolchain or f"none ({inputs.why_not})",
    }
    if inputs.base_registry_digest:
        labels["org.opencontainers.image.base.digest"] = inputs.base_registry_digest
    return labels


def _secrets(options: BuildOptions) -> dict[str, bytes]:
    secrets: dict[str, bytes] = {}
    if options.ca_bundle is not None:
        secrets["ca.pem"] = options.ca_bundle.read_bytes()
    if options.index_url:
        secrets["index-url"] = options.index_url.encode()
    return secrets


def _stages(options: BuildOptions) -> tuple[str | None, ...]:
    """The stages to build in order; None is the final image."""
    if options.stop_after is not None:
        return CACHED_STAGES[: CACHED_STAGES.index(options.stop_after) + 1]
    return (*CACHED_STAGES, IMAGE_STAGE, SBOM_STAGE, None)


@dataclass
class _Built:
    """What the stages of one build made."""

    image_id: str = ""
    hits: int = 0
    steps: int = 0
    created: list[str] = field(default_factory=list)
    stage_ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Plan:
    """One build's fixed inputs for every stage."""

    target: Target
    options: BuildOptions
    stages: tuple[str | None, ...]
    build_args: dict[str, str]
    labels: dict[str, str]
    revision: str
    context: bytes
    secrets: dict[str, bytes]

    @property
    def dockerfile(self) -> str:
        return f"{self.target.name}/Dockerfile"


def _build_stages(client: docker.DockerClient, plan: _Plan, say: Emit) -> _Built:
    """Build every stage in turn (tagging each at once), with the secrets served meanwhile."""
    built = _Built()
    with serve_secrets(plan.secrets) as secrets_url:
        for stage in plan.stages:
            label = stage or plan.target.name
            progress = Progress(say, label)
            say(f"[{label}] building {'stage ' + stage if stage else 'image'}")
            args = {**plan.build_args, ADDRESS_BUILD_ARG: secrets_url}
            if stage in (SBOM_STAGE, None):
                args["SOURCE_REVISION"] = plan.revision
            chunks = client.api.build(
                fileobj=io.BytesIO(plan.context),
                custom_context=True,
                dockerfile=plan.dockerfile,
                buildargs=args,
                labels=plan.labels if stage is None else None,
                target=stage,
                network_mode="host",
                rm=True,
                forcerm=True,
                nocache=plan.options.no_cache,
                decode=True,
                pull=False,
            )
            built.image_id = stream_build(chunks, progress)
            built.hits += progress.cache_hits
            built.steps += progress.steps
            built.created += progress.created
            if stage is not None:
                built.stage_ids[stage] = built.image_id
                client.api.tag(built.image_id, f"{plan.options.repository}-stage", stage)
            say(f"[{label}] done in {progress.elapsed()} ({progress.summary()})")
    return built


def _tag_and_clean(
    client: docker.DockerClient,
    options: BuildOptions,
    tags: list[str],
    built: _Built,
    previous: list[str],
    say: Emit,
) -> None:
    if options.stop_after is None:
        for tag in tags:
            repository, _, name = tag.rpartition(":")
            client.api.tag(built.image_id, repository, name)
        for stage in TRANSIENT_STAGES:
            client.images.remove(stage_tag(options.repository, stage), noprune=True)
    # What no tag needs any more: the SBOM stage (the image plus the SBOM tools: not left
    # looking like a second image of the same size), stages a --no-cache build made again,
    # and the images and stages this build's tags pointed at before.
    sbom_stage = [built.stage_ids[SBOM_STAGE]] if SBOM_STAGE in built.stage_ids else []
    remove_untagged(client, [*sbom_stage, *reversed(built.created), *previous], say)


def build_image(
    target: Target, versions: Versions, options: BuildOptions, emit: Emit | None = None
) -> BuildResult:
    """Build `target`'s image from its committed Dockerfile and tag it."""
    say: Emit = emit or (lambda text: print(text, file=sys.stderr, flush=True))
    _check_options(options)
    epoch = (
        options.source_date_epoch if options.source_date_epoch is not None else source_date_epoch()
    )
    dockerfile = dockerfile_path(target)
    rendered = render_dockerfile(target, versions)
    check_rendered([RenderedFile(dockerfile, rendered), *render_layer_locks(versions)])
    client = connect()
    tags = image_tags(target, versions, options.repository)
    check_disk(client, tags[-1], say)
    inputs = _resolve_inputs(client, versions, options, epoch, say)
    revision = git_revision()
    stages = _stages(options)
    plan = _Plan(
        target,
        options,
        stages,
        {
            "BASE_IMAGE": inputs.base,
            "CUDA_TOOLCHAIN_IMAGE": inputs.toolchain or inputs.base,
            "SOURCE_DATE_EPOCH": str(inputs.epoch),
        },
        _labels(inputs, revision),
        revision,
        # One snapshot of the context for every stage: an edit under docker/ while the build
        # runs must not give the stages different inputs.
        context_tar(f"{target.name}/Dockerfile", rendered).getvalue(),
        _secrets(options),
    )
    previous = tagged_ids(
        client, [*tags, *(stage_tag(options.repository, s) for s in CACHED_STAGES)]
    )
    built = _build_stages(client, plan, say)
    _tag_and_clean(client, options, tags, built, previous, say)
    return BuildResult(
        built.image_id,
        tags if options.stop_after is None else [stage_tag(options.repository, str(stages[-1]))],
        inputs.base,
        inputs.base_origin,
        inputs.toolchain,
        source_date_epoch=inputs.epoch,
        base_content_digest=inputs.base_digest,
        cache_hits=built.hits,
        steps=built.steps,
        created=existing_ids(client, built.created),
        notes=inputs.notes,
    )
