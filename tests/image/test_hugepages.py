"""Where kt-kernel's expert buffers land with each KTHYBRID_HUGEPAGES setting, in the image.

The launcher's plan says which GLIBC_TUNABLES a setting gives the server; the image's
kt-kernel worker (kthybrid_serve.cpubench.worker) then loads synthetic MXFP4 experts under exactly
that environment and reports /proc/self/smaps_rollup before and after. The counters must
show what the launcher's documentation (kthybrid_serve/plan/hugepages.py) says.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kthybrid_serve.plan.hugepages import HUGETLB_POOL_FACTOR
from kthybrid_serve.plan.memory import KernelMemory
from kthybrid_serve.plan.method import VARIANT_FLAGS, kernel_memory

from tests.support.launcher_fixtures import ModelSpec, build_model

GPU = "NVIDIA GeForce RTX 5090,32607MiB,12.0"
# DeepSeek-V4-Flash's expert shapes in a model type whose GPU path needs no nvcc: this image
# may be built without the CUDA toolchain, and the plan then refuses DeepSeek-V4 (exit 23).
MOE = ModelSpec(layers=4, experts=16, shards=2, nextn=0, model_type="qwen3_moe",
                architecture="Qwen3MoeForCausalLM")  # fmt: skip
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
POOL = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
SPEC = {"method": "MXFP4", "hidden": 4096, "intermediate": 2048, "top_k": 6, "experts": 64,
        "layers": 2, "pools": [[0, 1]], "seconds": 0.2, "warmup_seconds": 0.05,
        "segments": 2}  # fmt: skip


@pytest.fixture(scope="module")
def model() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="kthybrid-hugepages-test-"))
    root.chmod(0o755)  # the image's user reads it
    build_model(root / "tiny-moe", MOE)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tunables(run_in_image: Any, model: Path) -> Any:
    """GLIBC_TUNABLES the launcher plans for a KTHYBRID_HUGEPAGES value (None: not set)."""

    def planned(mode: str) -> str | None:
        result = run_in_image(
            ["kthybrid-serve", "plan", "--json", "--model", "/models/tiny-moe", "--gpu", GPU,
             "--kt-num-gpu-experts", "4", "--hugepages", mode],
            volumes={str(model): {"bind": "/models", "mode": "ro"}}, shm_size="1g",
        )  # fmt: skip
        if result.exit_code == 18:  # the host lacks what the mode needs: not this test's point
            pytest.skip(f"the plan refuses KTHYBRID_HUGEPAGES={mode} here: {result.stderr}")
        assert result.exit_code == 0, result.stderr
        value: str | None = json.loads(result.stdout)["env"].get("GLIBC_TUNABLES")
        return value

    return planned


@pytest.fixture(scope="module")
def load(run_in_image: Any) -> Any:
    """Load the experts with this GLIBC_TUNABLES; (expert bytes, THP bytes, hugetlb, Rss,
    the measured memory of the kernel kt-kernel picked here)."""

    def run(glibc_tunables: str | None) -> tuple[int, int, int, int, KernelMemory]:
        env = {"GLIBC_TUNABLES": glibc_tunables} if glibc_tunables else None
        result = run_in_image(
            ["python", "-m", "kthybrid_serve.cpubench.worker", json.dumps(SPEC)],
            env=env,
            timeout=600,
        )
        assert result.exit_code == 0, result.stderr[-2000:]
        data = result.json()
        assert data["glibc_tunables"] == glibc_tunables
        before, after = data["smaps_before_load"], data["smaps_after_load"]
        return (
            data["loaded_bytes"],
            after["AnonHugePages"] - before["AnonHugePages"],
            after["Private_Hugetlb"] - before["Private_Hugetlb"],
            after["Rss"] - before["Rss"],
            kernel_memory(frozenset(VARIANT_FLAGS[data["cpu_variant"]]), str(SPEC["method"])),
        )

    return run


def thp_mode() -> str:
    text = THP.read_text()
    return text[text.index("[") + 1 : text.index("]")]


@pytest.fixture
def pool_for_experts() -> Iterator[int]:
    """Enough 2 MiB pages on the host for the experts (root only); restored after."""
    # HUGETLB_POOL_FACTOR x the worker's 1.6 GiB of experts (the plan asks for less).
    need = 1250
    try:
        old = POOL.read_text().strip()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        Path("/proc/sys/vm/compact_memory").write_text("1\n")
        POOL.write_text(f"{need}\n")
    except OSError as error:
        pytest.skip(f"cannot reserve hugepages here ({error.strerror}); needs root")
    try:
        if int(POOL.read_text()) < need:
            pytest.skip(f"the kernel reserved fewer than {need} 2 MiB pages (fragmented memory)")
        yield need
    finally:
        POOL.write_text(f"{old}\n")


def test_off_leaves_the_experts_on_4k_pages(tunables: Any, load: Any) -> None:
    if thp_mode() == "always":
        pytest.skip("THP is 'always' on this host: it backs every anonymous mapping")
    assert tunables("off") is None
    loaded, thp, hugetlb, _, _ = load(None)
    assert thp <= 0.05 * loaded
    assert hugetlb == 0


def test_thp_puts_most_expert_bytes_on_transparent_hugepages(tunables: Any, load: Any) -> None:
    setting = tunables("thp")
    assert setting == "glibc.malloc.hugetlb=1"
    loaded, thp, hugetlb, _, _ = load(setting)
    assert thp >= 0.6 * loaded  # measured 71% (AVX512, AMX kernels), 117% (AVX2 MXFP4)
    assert hugetlb == 0


def test_hugetlb_puts_the_experts_on_the_2mib_pool(
    pool_for_experts: int, tunables: Any, load: Any
) -> None:
    setting = tunables("hugetlb")
    assert setting == "glibc.malloc.hugetlb=2097152"
    loaded, thp, hugetlb, rss, kernel = load(setting)
    assert 0.6 * loaded <= hugetlb <= HUGETLB_POOL_FACTOR * loaded
    # The share on 4 KiB pages is the kernel's: kt-kernel picks it by this host's CPU.
    assert rss <= kernel.hugetlb_small_share * loaded
    assert thp == 0
