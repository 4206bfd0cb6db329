"""docker/scripts/collect-cuda-toolchain.sh copies a CUDA toolkit's compiler parts that work alone.

The production image gets nvcc this way from NVIDIA's CUDA 12.8 devel image, which these
machines cannot pull; the CUDA toolkit installed on this machine (13.0) stands in for it, so
what is tested is the copy: nvcc, NVVM, headers and runtime libraries, nothing left behind.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder.matrix import REPO_ROOT

SCRIPT = REPO_ROOT / "docker" / "scripts" / "collect-cuda-toolchain.sh"
HOST_CUDA = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
KERNEL = r"""
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cub/cub.cuh>
__global__ void scale(__half* x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = __float2half(a * __half2float(x[i]));
}
int main() {
    __half* d;
    cudaMalloc(&d, 16);
    scale<<<1, 8>>>(d, 2.0f, 8);
    return cudaDeviceSynchronize() == cudaSuccess ? 0 : 1;
}
"""


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (HOST_CUDA / "bin" / "nvcc").exists():
        pytest.skip(f"no CUDA toolkit at {HOST_CUDA} to collect from (set CUDA_HOME)")
    dest = tmp_path_factory.mktemp("cuda") / "toolchain"
    subprocess.run(["bash", str(SCRIPT), str(HOST_CUDA), str(dest)], check=True)
    return dest


def nvcc(collected: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Nothing of the host's toolkit on PATH: the copy must be complete by itself.
    env = {"PATH": f"{collected / 'bin'}:/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(
        [str(collected / "bin" / "nvcc"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )


def test_without_nvcc_the_copy_holds_only_a_note(tmp_path: Path) -> None:
    empty = tmp_path / "no-cuda"
    empty.mkdir()
    subprocess.run(["bash", str(SCRIPT), str(empty), str(tmp_path / "out")], check=True)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["NVCC-ABSENT"]


def test_collected_nvcc_builds_an_executable_for_sm_90a(collected: Path, tmp_path: Path) -> None:
    (tmp_path / "k.cu").write_text(KERNEL)
    result = nvcc(collected, "-arch=sm_90a", "-o", "k", "k.cu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "k").stat().st_size > 0


def test_collected_nvcc_builds_a_cubin_for_sm_120a(collected: Path, tmp_path: Path) -> None:
    (tmp_path / "k.cu").write_text(KERNEL)
    result = nvcc(collected, "-arch=sm_120a", "-cubin", "-o", "k.cubin", "k.cu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "k.cubin").read_bytes()[:4] == b"\x7fELF"


def test_collected_nvcc_uses_nothing_outside_the_copy(collected: Path, tmp_path: Path) -> None:
    (tmp_path / "k.cu").write_text(KERNEL)
    result = nvcc(collected, "--dryrun", "-arch=sm_90a", "-o", "k", "k.cu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(HOST_CUDA) not in result.stderr
    assert str(HOST_CUDA.resolve()) not in result.stderr
