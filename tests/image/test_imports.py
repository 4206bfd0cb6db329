"""What the serving stack needs imports, and sgl_kernel's binaries assemble, with no GPU."""

from __future__ import annotations

from typing import Any

import pytest

from builder.matrix import Target

# sglang files that import names transformers 4.57.1 lacks. None is on DeepSeek-V4-Flash's path
# (GLM ASR/OCR/image and GLM-5-Next processors, MiniCPM-o, Kimi K2.5); see README, pin decisions.
NOT_ON_THE_V4_PATH = {
    "srt/models/glmasr.py",
    "srt/models/glm_ocr.py",
    "srt/models/minicpmo.py",
    "srt/models/kimi_k25.py",
    "srt/multimodal/processors/glm5_next.py",
    "srt/utils/hf_transformers_utils.py",  # only inside `if config.model_type == "glm5_next"`
    "multimodal_gen/runtime/loader/component_loaders/vl_encoder_loader.py",
}


@pytest.mark.parametrize(
    "module",
    [
        "sglang.srt.server_args",
        "sglang.srt.configs.deepseek_v4",
        "kt_kernel",
        "flashinfer",
        "tilelang",
        "triton",
        "kthybrid_serve",
    ],
)
def test_module_imports(run_in_image: Any, module: str) -> None:
    result = run_in_image(["python", "-c", f"import {module}"])
    assert result.exit_code == 0, result.stderr[-2000:]


def test_every_transformers_name_sglang_needs_for_deepseek_v4_resolves(run_script: Any) -> None:
    result = run_script("imported_names.py", "transformers", "huggingface_hub")
    assert result.exit_code == 0, result.stderr[-2000:]
    report = result.json()
    assert report["transformers"]["version"] == "4.57.1"
    assert report["transformers"]["names"] > 150
    files = {f for missing in report["transformers"]["missing"] for f in missing["files"]}
    assert files <= NOT_ON_THE_V4_PATH, files - NOT_ON_THE_V4_PATH


def test_every_huggingface_hub_name_sglang_imports_resolves(run_script: Any) -> None:
    result = run_script("imported_names.py", "huggingface_hub")
    assert result.exit_code == 0, result.stderr[-2000:]
    assert result.json()["huggingface_hub"]["missing"] == []


def test_sgl_kernel_binaries_for_the_target_assemble_with_correct_hashes(
    run_script: Any, target: Target
) -> None:
    # Assembly needs 4 GB free under the cache dir; the container's /tmp is on the host's disk.
    result = run_script(
        "sgl_kernel_assemble.py",
        target.sgl_kernel_ops,
        env={"XDG_CACHE_HOME": "/tmp"},
        timeout=600,
    )
    assert result.exit_code == 0, result.stdout + result.stderr[-2000:]
    report = result.json()
    assert all(report["payload_parts"].values()), report["payload_parts"]
    assert all(b["sha256_ok"] for b in report["binaries"].values()), report["binaries"]


def test_sgl_kernel_import_stops_only_at_the_driver_library(run_in_image: Any) -> None:
    # With every part present, the one thing missing without a GPU is the driver's libcuda,
    # which the NVIDIA container runtime injects on a GPU host.
    result = run_in_image(
        ["python", "-c", "import sgl_kernel"],
        env={"XDG_CACHE_HOME": "/tmp"},
        timeout=600,
    )
    assert result.exit_code != 0
    assert "libcuda.so.1" in result.stderr
