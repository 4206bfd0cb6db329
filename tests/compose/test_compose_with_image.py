"""The real image under Compose on a machine without GPUs: `up` and the launcher's `plan`."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.compose_project import API_KEY, CI_MEMLOCK, OTHER_MOE, ComposeProject

Compose = Callable[..., ComposeProject]
NO_GPU = "compose.yaml:compose.no-gpu.yaml"
RTX_5090 = "NVIDIA GeForce RTX 5090,32GiB,12.0"


@pytest.fixture(scope="session")
def image_settings(compose_image: str) -> Iterator[dict[str, str]]:
    """KTHYBRID_IMAGE_REPO and ARCH that name the image under test (via a throwaway tag)."""
    arch = compose_image.rsplit(":", 1)[-1].rsplit("-", 1)[-1]
    repo = "kthybrid-compose-test"
    subprocess.run(["docker", "tag", compose_image, f"{repo}:{arch}"], check=True)
    yield {"KTHYBRID_IMAGE_REPO": repo, "ARCH": arch}
    subprocess.run(["docker", "rmi", f"{repo}:{arch}"], capture_output=True, check=False)


@pytest.fixture
def gpu_less(compose: Compose, image_settings: dict[str, str], models_dir: Path) -> ComposeProject:
    return compose(
        **image_settings,
        COMPOSE_FILE=NO_GPU,
        MODELS_DIR=str(models_dir),
        MEMLOCK=CI_MEMLOCK,
        RESTART_POLICY="no",
        SHM_SIZE="12g",
        MODEL_NAME=OTHER_MOE,
    )


def _wait_exited(container: str, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(
            subprocess.run(
                ["docker", "inspect", "--format", "{{json .State}}", container],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        if state["Status"] == "exited":
            return int(state["ExitCode"])
        time.sleep(1)
    raise AssertionError(f"container {container} still running after {timeout} s")


def test_up_starts_the_server_and_preflight_says_no_gpu(gpu_less: ComposeProject) -> None:
    gpu_less.run(["up", "--detach", "server"], timeout=300)
    container = gpu_less.run(["ps", "--all", "--quiet", "server"]).stdout.strip()
    assert container, "docker compose up created no server container"
    exit_code = _wait_exited(container)
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True, check=True)
    stderr_lines = logs.stderr.strip().splitlines()
    assert exit_code != 0
    assert len(stderr_lines) == 1, logs.stderr
    assert "no NVIDIA GPU found" in stderr_lines[0]


def _plan(project: ComposeProject, *args: str) -> str:
    result = project.run(["run", "--rm", "--no-deps", "-T", "server", *args], timeout=300)
    return result.stdout


def test_deepseek_v4_plans_only_where_the_image_has_nvcc(
    gpu_less: ComposeProject, image_settings: dict[str, str]
) -> None:
    gpu_less.set(MODEL_NAME="DeepSeek-V4-Flash")
    result = gpu_less.run(
        ["run", "--rm", "--no-deps", "-T", "server", "plan", "--gpu", RTX_5090],
        timeout=300, check=False,
    )  # fmt: skip
    has_nvcc = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "sh", gpu_less_image(image_settings),
         "-c", "command -v nvcc"], capture_output=True, check=False,
    ).returncode == 0  # fmt: skip
    if has_nvcc:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 23, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "no nvcc" in lines[-1] and "--cuda-toolchain-image" in lines[-1]


def gpu_less_image(image_settings: dict[str, str]) -> str:
    return f"{image_settings['KTHYBRID_IMAGE_REPO']}:{image_settings['ARCH']}"


def test_plan_with_described_gpu_reads_the_real_host(gpu_less: ComposeProject) -> None:
    plan = _plan(gpu_less, "plan", "--gpu", RTX_5090)
    nodes = len(list(Path("/sys/devices/system/node").glob("node[0-9]*"))) or 1
    assert f"numa:   {nodes} node(s)" in plan
    assert "gpu 0:  NVIDIA GeForce RTX 5090, 32.0 GiB, cc 12.0" in plan


def test_plan_sees_the_configured_shm(gpu_less: ComposeProject) -> None:
    assert "/dev/shm 12.0 GiB" in _plan(gpu_less, "plan", "--gpu", RTX_5090)


def test_doctor_sees_the_configured_memlock(gpu_less: ComposeProject) -> None:
    checks = json.loads(_plan(gpu_less, "doctor", "--json", "--gpu", RTX_5090))
    memlock = next(c for c in checks if c["name"] == "memlock")
    assert f"limited to {int(CI_MEMLOCK) // 1024} KiB" in memlock["message"]


def test_plan_sees_hugepages_reserved_on_the_host(
    gpu_less: ComposeProject, hugepages_reserved: int
) -> None:
    gpu_less.set(COMPOSE_FILE=f"{NO_GPU}:compose.hugepages.yaml")
    plan = _plan(gpu_less, "plan", "--gpu", RTX_5090)
    reserved_gib = hugepages_reserved * 2 * 1024**2 / 1024**3
    assert f"{reserved_gib:.1f} GiB reserved as hugepages" in plan


def test_hugepages_layer_backs_the_experts_through_glibc(
    gpu_less: ComposeProject, hugepages_reserved: int
) -> None:
    gpu_less.set(COMPOSE_FILE=f"{NO_GPU}:compose.hugepages.yaml")
    # No GPU experts, so the CPU holds every expert and the pool must back them.
    plan = _plan(gpu_less, "plan", "--gpu", RTX_5090, "--kt-num-gpu-experts", "0")
    assert "GLIBC_TUNABLES=glibc.malloc.hugetlb=2097152" in plan


LOCKDOWN_PROBE = """
id -u; id -g
touch /probe 2>/dev/null && echo "/ writable" || echo "/ read-only"
for dir in /tmp "$HOME" /cache; do touch "$dir/probe" && echo "$dir writable"; done
grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status
cat /run/secrets/kthybrid-api-key; echo
"""


def _run_shell(project: ComposeProject, service: str, script: str) -> str:
    argv = ["run", "--rm", "--no-deps", "-T", "--entrypoint", "/bin/sh", service, "-c", script]
    return project.run(argv, timeout=300).stdout


def test_the_server_runs_as_10000_read_only_with_two_capabilities(
    gpu_less: ComposeProject,
) -> None:
    lines = _run_shell(gpu_less, "server", LOCKDOWN_PROBE).splitlines()
    assert lines[:2] == ["10000", "10000"]
    assert "/ read-only" in lines
    assert {"/tmp writable", "/home/kthybrid writable", "/cache writable"} <= set(lines)
    status = dict(line.split(":\t") for line in lines if line.startswith(("Cap", "NoNew")))
    # CAP_IPC_LOCK (14) and CAP_SYS_NICE (23) only, and never gained through exec.
    assert int(status["CapBnd"], 16) == (1 << 14) | (1 << 23)
    assert int(status["CapEff"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert lines[-1] == API_KEY


def test_the_download_passes_the_pinned_revision(gpu_less: ComposeProject, tmp_path: Path) -> None:
    """The download service's own command line, with huggingface-cli replaced by one that
    prints its arguments."""
    fake_cli = tmp_path / "huggingface-cli"
    fake_cli.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake_cli.chmod(0o755)
    mount = f"{fake_cli}:/opt/venv/bin/huggingface-cli:ro"
    commit = "0123456789abcdef0123456789abcdef01234567"

    def download_args(**settings: str) -> list[str]:
        gpu_less.set(**settings)
        result = gpu_less.run(
            ["run", "--rm", "--no-deps", "-T", "-v", mount, "download"], timeout=300
        )
        return result.stdout.splitlines()

    pinned = download_args(HF_REVISION=commit)
    assert pinned[-2:] == ["--revision", commit]
    assert pinned[:2] == ["download", "deepseek-ai/DeepSeek-V4-Flash"]
    assert "--revision" not in download_args(HF_REVISION="")
