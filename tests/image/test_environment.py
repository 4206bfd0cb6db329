"""The image's environment and labels say what it was built for."""

from __future__ import annotations

import re
from typing import Any

import docker.models.images

from builder.matrix import Target, load_targets, load_versions


def test_torch_arch_list_matches_the_target(image_env: dict[str, str], target: Target) -> None:
    assert image_env["TORCH_CUDA_ARCH_LIST"] == target.torch_cuda_arch_list


def test_flashinfer_arch_list_matches_the_target(image_env: dict[str, str], target: Target) -> None:
    assert image_env["FLASHINFER_CUDA_ARCH_LIST"] == target.flashinfer_cuda_arch_list


def test_target_and_capability_are_in_the_environment(
    image_env: dict[str, str], target: Target
) -> None:
    assert image_env["KTHYBRID_TARGET"] == target.name
    assert image_env["KTHYBRID_TARGET_CC"] == target.compute_capability


def test_deepseek_v4_modes_are_left_to_the_launcher(image_env: dict[str, str]) -> None:
    # One owner: the launcher sets them per model and method (2604B with MXFP4 only).
    assert "SGLANG_DSV4_MODE" not in image_env
    assert "SGLANG_DSV4_2604_SUBMODE" not in image_env


def test_kt_kernel_cpu_variant_is_not_baked_in(image_env: dict[str, str]) -> None:
    assert "KT_KERNEL_CPU_VARIANT" not in image_env


def test_every_jit_cache_lives_under_the_cache_volume(
    image_env: dict[str, str], image: docker.models.images.Image
) -> None:
    for name in (
        "XDG_CACHE_HOME",
        "TRITON_CACHE_DIR",
        "TORCH_EXTENSIONS_DIR",
        "FLASHINFER_WORKSPACE_BASE",
        "TILELANG_CACHE_DIR",
        "TVM_FFI_CACHE_DIR",
        "CUDA_CACHE_PATH",
        "SGL_KERNEL_KT_CACHE_DIR",
    ):
        assert image_env[name].startswith("/cache"), name
    assert "/cache" in (image.attrs["Config"].get("Volumes") or {})


def test_labels_carry_every_pinned_version(image: docker.models.images.Image) -> None:
    labels = image.labels
    for requirement in load_versions().requirements:
        assert labels[f"io.kthybrid.pin.{requirement.name}"] == requirement.version


def test_labels_carry_target_cuda_revision_and_date(
    image: docker.models.images.Image, target: Target
) -> None:
    labels = image.labels
    assert labels["io.kthybrid.target"] == target.name
    assert labels["io.kthybrid.cuda"] == "12.8"
    assert len(labels["org.opencontainers.image.revision"]) >= 40
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert labels["org.opencontainers.image.base.name"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", labels["io.kthybrid.base.content-digest"])
    assert int(labels["io.kthybrid.source-date-epoch"]) > 1_600_000_000


def test_healthcheck_waits_for_a_multi_minute_start(image: docker.models.images.Image) -> None:
    health = image.attrs["Config"]["Healthcheck"]
    assert "/health" in " ".join(health["Test"])
    assert health["StartPeriod"] >= 600 * 10**9


def test_both_tags_point_at_the_image(
    image: docker.models.images.Image, target: Target, repository: str
) -> None:
    version = load_versions().version_of("sglang-kt")
    assert f"{repository}:{version}-cu128-{target.name}" in image.tags
    assert f"{repository}:{target.name}" in image.tags


def test_launcher_carries_the_targets_the_builder_rendered(run_in_image: Any) -> None:
    script = (
        "from kthybrid_serve.plan.targets import load_target_data; "
        "print(sorted(t.name for t in load_target_data().targets))"
    )
    result = run_in_image(["python", "-c", script])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(sorted(load_targets()))
