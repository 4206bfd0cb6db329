"""`kthybrid-serve bench` and `tune` in the image, on this host's CPU with kt-kernel's real kernels.

A small DeepSeek-V4-shaped checkpoint (real safetensors headers, sparse data) is mounted as
the model; the bench loads synthetic experts at its shapes. One bench and one tune run per
module; the tests judge the JSON they printed and the files they left in /cache.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.launcher_fixtures import ModelSpec, build_model

GPU = "NVIDIA GeForce RTX 5090,32607MiB,12.0"
# DeepSeek-V4-Flash's expert shapes in a model type whose GPU path needs no nvcc: this image
# may be built without the CUDA toolchain, and the plan then refuses DeepSeek-V4 (exit 23).
MOE = ModelSpec(layers=4, experts=16, shards=2, nextn=0, model_type="qwen3_moe",
                architecture="Qwen3MoeForCausalLM")  # fmt: skip


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A model directory and a /cache the image's user can write, shared by the runs."""
    root = Path(tempfile.mkdtemp(prefix="kthybrid-bench-test-"))
    root.chmod(0o755)  # the image's user reads it
    build_model(root / "models" / "tiny-moe", MOE)
    (root / "cache").mkdir()
    (root / "cache").chmod(0o777)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def kthybrid(run_in_image: Any, workdir: Path) -> Any:
    def run(*args: str) -> Any:
        volumes = {
            str(workdir / "models"): {"bind": "/models", "mode": "ro"},
            str(workdir / "cache"): {"bind": "/cache", "mode": "rw"},
        }
        return run_in_image(
            ["kthybrid-serve", *args, "--model", "/models/tiny-moe", "--gpu", GPU],
            volumes=volumes,
            timeout=900,
            shm_size="1g",
        )

    return run


@pytest.fixture(scope="module")
def bench(kthybrid: Any) -> dict[str, Any]:
    result = kthybrid("bench", "--json")
    assert result.exit_code == 0, result.stderr[-2000:]
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_bench_json_has_the_documented_fields(bench: dict[str, Any]) -> None:
    for field in ("method", "cpu_variant", "bandwidth_gbps", "runs", "plan_threads", "plan_gbps",
                  "best_threads", "best_gbps"):  # fmt: skip
        assert field in bench, field
    assert bench["method"] == "MXFP4"
    for run in bench["runs"]:
        assert {"threads", "pools", "gbps"} <= set(run), run
        assert run["threads"] == sum(run["threads_per_pool"])


def test_best_is_the_fastest_run_and_plan_is_the_plans_run(bench: dict[str, Any]) -> None:
    measured = [r for r in bench["runs"] if r["gbps"] is not None]
    assert measured, bench["runs"]
    fastest = max(r["gbps"] for r in measured)
    assert bench["best_gbps"] == fastest
    assert any(r["threads"] == bench["best_threads"] and r["gbps"] == fastest for r in measured)
    plan_run = next(r for r in bench["runs"] if "plan" in r["labels"])
    assert (plan_run["threads"], plan_run["gbps"]) == (bench["plan_threads"], bench["plan_gbps"])
    assert bench["plan_vs_best"] == round(bench["plan_gbps"] / fastest, 3)
    assert bench["best_vs_bandwidth"] == round(fastest / bench["bandwidth_gbps"], 3)
    assert all(r["gbps"] > 0 for r in measured)


def test_bench_writes_its_json_and_plot_in_the_cache_volume(
    bench: dict[str, Any], workdir: Path
) -> None:
    assert bench["json_path"] == "/cache/bench/cpu-experts-MXFP4.json"
    written = json.loads((workdir / "cache" / "bench" / "cpu-experts-MXFP4.json").read_text())
    assert written["runs"] == bench["runs"]
    assert bench["png_path"] == "/cache/bench/cpu-experts-MXFP4.png", bench["plot_error"]
    png = (workdir / "cache" / "bench" / "cpu-experts-MXFP4.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_tune_makes_the_plan_use_the_measured_threads(kthybrid: Any, bench: dict[str, Any]) -> None:
    def plan_items() -> dict[str, dict[str, str]]:
        result = kthybrid("plan", "--json", "--kt-num-gpu-experts", "4")
        assert result.exit_code == 0, result.stderr
        return {i["name"]: i for i in json.loads(result.stdout)["items"]}

    assert plan_items()["--kt-cpuinfer"]["source"] == "planned"
    tuned = kthybrid("tune")
    assert tuned.exit_code == 0, tuned.stderr[-2000:]
    assert "stored /cache/kthybrid/tune/MXFP4-4096x2048-top6-" in tuned.stdout
    items = plan_items()
    assert items["--kt-cpuinfer"]["source"] == "measured"
    assert "GB/s of expert weights" in items["--kt-cpuinfer"]["reason"]
    assert items["CPU decode ceiling"]["value"].endswith("tokens/s")
