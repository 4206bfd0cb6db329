"""In the image, the launcher refuses at plan time what the image cannot run (nvcc, flash_mla)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from builder.matrix import REPO_ROOT, Target, load_targets
from tests.support.launcher_fixtures import GB, HostSpec, ModelSpec, build_host, build_model

TINY_V4 = ModelSpec(layers=4, experts=16, hidden=256, inter=128, vocab=1000, shards=2, nextn=0,
                    attention_bytes_per_layer=256 * 1024)  # fmt: skip
TINY_OTHER = ModelSpec(layers=4, experts=16, hidden=256, inter=128, vocab=1000, shards=2, nextn=0,
                       attention_bytes_per_layer=256 * 1024, model_type="qwen3_moe",
                       architecture="Qwen3MoeForCausalLM")  # fmt: skip


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("needs")
    build_host(root / "host", HostSpec(cores_per_node=8, mem_bytes=256 * GB))
    build_model(root / "v4", TINY_V4)
    build_model(root / "other", TINY_OTHER)
    root.chmod(0o755)
    return root


def gpu_of(target: Target) -> str:
    return f"{target.gpu_products[0]},80GiB,{target.compute_capability}"


def plan_in(run: Any, trees: Path, target: Target, model: str) -> tuple[int, dict[str, Any]]:
    result = run(
        ["kthybrid-serve", "plan", "--host-root", "/trees/host", "--model", f"/trees/{model}",
         "--gpu", gpu_of(target), "--json"],
        volumes={str(trees): {"bind": "/trees", "mode": "ro"}},
    )  # fmt: skip
    return result.exit_code, json.loads(result.stdout)


def expected_code(image_has: dict[str, bool], target: Target) -> int:
    if target.nsa_backend == "flash_mla" and not image_has["flash_mla"]:
        return 25
    return 0 if image_has["nvcc"] else 23


@pytest.fixture(scope="module")
def image_has(run_in_image: Any) -> dict[str, bool]:
    script = (
        "import importlib.util, json, shutil; print(json.dumps({'nvcc': bool(shutil.which("
        "'nvcc')), 'flash_mla': importlib.util.find_spec('flash_mla') is not None}))"
    )
    return dict(run_in_image(["python", "-c", script]).json())


def test_deepseek_v4_plans_only_where_the_image_can_run_it(
    run_in_image: Any, trees: Path, target: Target, image_has: dict[str, bool]
) -> None:
    code, data = plan_in(run_in_image, trees, target, "v4")
    assert code == expected_code(image_has, target), data
    if code == 23:
        assert "no nvcc" in data["error"]["message"]
        assert "--cuda-toolchain-image" in data["error"]["message"]


def test_a_model_without_those_needs_plans_in_the_same_image(
    run_in_image: Any, trees: Path, target: Target
) -> None:
    code, data = plan_in(run_in_image, trees, target, "other")
    assert code == 0, data
    assert data["target"] == target.name


@pytest.fixture(scope="module")
def sm90_image(docker_client: docker.DockerClient, image: Any) -> Iterator[Any]:
    """The sm90 image: on the layers the tested image already built, only its last ones."""
    name = "kthybrid:sm90"
    try:
        yield docker_client.images.get(name)
        return
    except docker.errors.ImageNotFound:
        pass
    done = subprocess.run(
        [sys.executable, "-m", "builder", "build", "--arch", "sm90"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    yield docker_client.images.get(name)


def test_the_sm90_image_imports_flash_mla_or_refuses_at_plan_time(
    docker_client: docker.DockerClient, sm90_image: Any, trees: Path
) -> None:
    sm90 = load_targets()["sm90"]
    output = docker_client.containers.run(
        sm90_image.id,
        entrypoint=["sh", "-c"],
        command=["python -c 'import flash_mla' 2>/dev/null && echo imports || "
                 f"kthybrid-serve plan --host-root /trees/host --model /trees/v4 "
                 f"--gpu '{gpu_of(sm90)}' --json; echo rc=$?"],
        volumes={str(trees): {"bind": "/trees", "mode": "ro"}},
        network_mode="none", remove=True, labels={"io.kthybrid.test": "image"},
    ).decode()  # fmt: skip
    if output.startswith("imports"):
        return
    assert "rc=25" in output, output
    assert "flash_mla" in json.loads(output.splitlines()[0])["error"]["message"]
