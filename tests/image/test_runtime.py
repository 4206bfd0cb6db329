"""How the image behaves when it runs: user, init, NUMA tools, writable caches, the entrypoint."""

from __future__ import annotations

from typing import Any

import docker.models.images


def test_user_is_not_root(image: docker.models.images.Image, host: Any) -> None:
    assert image.attrs["Config"]["User"] == "1000:0"
    assert host.user().uid == 1000
    assert host.user().gid == 0


def test_tini_is_pid_1(host: Any) -> None:
    assert host.file("/proc/1/cmdline").content_string.split("\x00")[0] == "/usr/bin/tini"


def test_numactl_hardware_runs(host: Any) -> None:
    result = host.run("numactl --hardware")
    assert result.rc == 0, result.stderr
    assert "available:" in result.stdout


def test_kt_cli_is_installed(host: Any) -> None:
    assert host.run("kt --help").rc == 0


def test_kthybrid_serve_is_the_entrypoint(image: docker.models.images.Image) -> None:
    assert image.attrs["Config"]["Entrypoint"] == ["/usr/bin/tini", "--", "kthybrid-serve"]
    assert image.attrs["Config"]["Cmd"] == ["serve"]


def test_home_and_caches_are_writable_under_an_arbitrary_uid(run_in_image: Any) -> None:
    script = (
        'set -e; touch "$HOME/probe"; '
        'for d in "$TRITON_CACHE_DIR" "$TORCH_EXTENSIONS_DIR" "$TILELANG_CACHE_DIR" '
        '"$SGL_KERNEL_KT_CACHE_DIR" "$HF_HOME"; do mkdir -p "$d" && touch "$d/probe"; done; '
        "id -u"
    )
    result = run_in_image(["bash", "-c", script], user="4242:0")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "4242"


def test_entrypoint_without_a_gpu_exits_with_one_line(
    docker_client: Any, image: docker.models.images.Image
) -> None:
    container = docker_client.containers.run(
        image.id, labels={"io.kthybrid.test": "image"}, detach=True, network_mode="none"
    )
    try:
        status = container.wait(timeout=120)
        stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True, v=True)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert status["StatusCode"] != 0
    assert len(lines) == 1, lines
    assert "no NVIDIA GPU found" in lines[0]
    assert "Traceback" not in stderr
