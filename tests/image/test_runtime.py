"""How the image behaves when it runs: user, init, NUMA tools, writable caches, the entrypoint."""

from __future__ import annotations

from typing import Any

import docker.models.images
import docker.types
import pytest


def test_user_is_uid_and_gid_10000(image: docker.models.images.Image, host: Any) -> None:
    assert image.attrs["Config"]["User"] == "10000:10000"
    assert host.user().uid == 10000
    assert host.user().gid == 10000
    assert host.user().name == "kthybrid"


def test_writable_folders_belong_to_10000_and_group_0_with_group_write(host: Any) -> None:
    for path in ("/cache", "/models", "/home/kthybrid"):
        folder = host.file(path)
        assert (folder.uid, folder.gid) == (10000, 0), path
        assert folder.mode & 0o070 == 0o070, path


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


WRITE_PROBES = (
    'set -e; touch "$HOME/probe" /tmp/probe; '
    'for d in "$TRITON_CACHE_DIR" "$TORCH_EXTENSIONS_DIR" "$TILELANG_CACHE_DIR" '
    '"$XDG_CACHE_HOME/sgl-kernel-kt" "$HF_HOME"; do mkdir -p "$d" && touch "$d/probe"; done; '
    "if touch /opt/venv/probe 2>/dev/null || touch /probe 2>/dev/null; then "
    "echo 'root file system is writable'; exit 3; fi; id -u"
)


@pytest.mark.parametrize("user", ["10000:10000", "4242:0"])
def test_home_caches_and_tmp_are_writable_on_a_read_only_root(
    read_only_run: Any, user: str
) -> None:
    # 4242:0: an arbitrary UID in group 0, as OpenShift assigns one.
    result = read_only_run(["bash", "-c", WRITE_PROBES], user=user)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.strip() == user.split(":")[0]


def test_the_serving_stack_imports_on_a_read_only_root(read_only_run: Any) -> None:
    result = read_only_run(
        ["python", "-c", "import sglang.srt.server_args, kt_kernel, flashinfer, kthybrid_serve"],
        user="4242:0",
        timeout=600,
    )
    assert result.exit_code == 0, result.stderr[-2000:]


@pytest.mark.parametrize("read_only", [False, True])
def test_entrypoint_without_a_gpu_exits_with_one_line(
    docker_client: Any, image: docker.models.images.Image, read_only: bool
) -> None:
    container = docker_client.containers.run(
        image.id,
        labels={"io.kthybrid.test": "image"},
        detach=True,
        network_mode="none",
        read_only=read_only,
        tmpfs={"/tmp": "rw"} if read_only else None,
        mounts=[
            docker.types.Mount(target=target, source=None, type="volume")
            for target in ("/cache", "/home/kthybrid")
        ]
        if read_only
        else None,
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
