"""CUDA 12.8 inside the image can build code for the image's target, with no GPU."""

from __future__ import annotations

from typing import Any

import docker.models.images
import pytest

from builder.matrix import Target


def test_nvrtc_12_8_compiles_a_kernel_for_the_target_arch(run_script: Any, target: Target) -> None:
    result = run_script("nvrtc_compile.py", target.nvrtc_arch)
    assert result.exit_code == 0, result.stdout + result.stderr
    report = result.json()
    assert report["nvrtc"] == "12.8"
    assert report["elf"] and report["cubin_bytes"] > 0


def test_nvcc_is_cuda_12_8_where_the_base_provides_it(
    run_in_image: Any, image: docker.models.images.Image
) -> None:
    toolchain = image.labels.get("io.kthybrid.cuda-toolchain-image", "")
    if toolchain.startswith("none"):
        result = run_in_image(["cat", "/usr/local/cuda/NVCC-ABSENT"])
        assert result.exit_code == 0
        pytest.skip(f"built without a CUDA toolchain image ({toolchain}): this image has no nvcc")
    result = run_in_image(["nvcc", "--version"])
    assert result.exit_code == 0, result.stderr
    assert "release 12.8" in result.stdout
