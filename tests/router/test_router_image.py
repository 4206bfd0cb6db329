"""The router image: exactly docker/lock/router.lock in its environment, no CUDA, user 10000."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

from router_fixtures import KEY_PATH_IN_CONTAINER, LABEL, free_port

from builder.lock import ROUTER_LOCK, normalise, read_lock


def in_image(image: str, *argv: str) -> str:
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", argv[0], image, *argv[1:]],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_router_environment_is_the_router_lock(router_image: str) -> None:
    listed = json.loads(in_image(router_image, "/opt/router/bin/python", "-m", "pip", "list",
                                 "--format", "json", "--disable-pip-version-check"))  # fmt: skip
    installed = {normalise(p["name"]): p["version"] for p in listed}
    # What `python3 -m venv` (install-tools.sh) seeds every venv with from Debian's ensurepip.
    for seeded in ("pip", "setuptools"):
        installed.pop(seeded, None)
    assert installed == {p.name: p.version for p in read_lock(ROUTER_LOCK)}


def test_the_router_image_has_no_cuda_stack(router_image: str) -> None:
    found = in_image(router_image, "/bin/sh", "-c",
                     "find / -xdev \\( -name 'libcuda*' -o -name 'libcudart*' -o -name 'torch' "
                     "-o -name 'nvcc' \\) -print 2>/dev/null; true")  # fmt: skip
    assert found == ""


def test_the_router_runs_as_the_unprivileged_user(router_image: str) -> None:
    assert in_image(router_image, "/usr/bin/id", "-u").strip() == "10000"


def test_the_router_shuts_down_gracefully_on_sigterm(router_image: str, key_file: Path) -> None:
    """tini hands docker stop's SIGTERM to the router, which drains and exits 0 (no SIGKILL)."""
    port = free_port()
    name = f"kthybrid-router-test-sigterm-{os.getpid()}"
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--label", LABEL, "--network", "host",
         "-v", f"{key_file}:{KEY_PATH_IN_CONTAINER}:ro",
         "-e", f"KTHYBRID_API_KEY_FILE={KEY_PATH_IN_CONTAINER}",
         router_image, "--host", "127.0.0.1", "--port", str(port)],
        capture_output=True, check=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=2).close()
                break
            except OSError:
                time.sleep(0.3)
        subprocess.run(["docker", "stop", "-t", "60", name], capture_output=True, check=True)
        state = json.loads(
            subprocess.run(["docker", "inspect", name], capture_output=True, check=True).stdout
        )[0]["State"]
        shown = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        logs = shown.stdout + shown.stderr
        assert state["ExitCode"] == 0, logs
        assert "starting graceful shutdown" in logs
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
