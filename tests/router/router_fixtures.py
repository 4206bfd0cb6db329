"""Helpers and session fixtures for the router tests (conftest.py re-exports the fixtures).

The router is the real sglang-router binary from the router image (`make router-image`),
started with `docker run` on the host network so that it reaches the stand-ins on loopback
ports. KTHYBRID_ROUTER_IMAGE names the image (default kthybrid:router); an image that is
missing is built with the builder first (cached layers make that seconds). The servers are
tests/support/openai_standin.py processes (sglang's OpenAI-compatible API and its 401 for a
missing key), so that killing one is a real crash.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

KEY = "router-test-key-0123456789abcdef"
KEY_PATH_IN_CONTAINER = "/run/secrets/kthybrid-api-key"
LABEL = "io.kthybrid.test=router"
STANDIN = Path(__file__).resolve().parents[1] / "support" / "openai_standin.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post(url: str, payload: dict[str, object], key: str | None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, json.dumps(payload).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


@dataclass
class Backend:
    """One stand-in server process on a loopback port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/standin/stats", timeout=10) as response:
            stats: dict[str, int] = json.loads(response.read())
        return stats

    def kill(self) -> None:
        """A crash: SIGKILL, no goodbye on open connections."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def start_backend(name: str, key_file: Path, ttft: float) -> Backend:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(STANDIN), "--host", "127.0.0.1", "--port", str(port),
         "--api-key-file", str(key_file), "--backend", name, "--ttft", str(ttft),
         "--itl", "0.001", "--tokens", "4"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    backend = Backend(name, port, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{backend.url}/health", timeout=2).close()
            return backend
        except OSError:
            time.sleep(0.1)
    process.kill()
    pytest.fail(f"the stand-in {name} did not answer on port {port}")


def stop_backend(backend: Backend) -> None:
    if backend.process.poll() is None:
        backend.process.terminate()
        backend.process.wait(timeout=10)


def chat(router: Router, prompt: str, key: str | None = KEY) -> tuple[int, bytes]:
    return post(
        f"{router.url}/v1/chat/completions",
        {"model": "standin-model", "messages": [{"role": "user", "content": prompt}]},
        key,
    )


def served_by(body: bytes) -> str:
    return str(json.loads(body)["backend"])


@pytest.fixture(scope="session")
def router_image() -> str:
    name = os.environ.get("KTHYBRID_ROUTER_IMAGE", "kthybrid:router")
    found = subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False)
    if found.returncode != 0:
        from builder.matrix import load_versions
        from builder.router import build_router_image

        repository, _, tag = name.rpartition(":")
        if tag != "router":
            pytest.fail(f"{name} does not exist: build it with `make router-image`", pytrace=False)
        build_router_image(load_versions(), repository=repository, pull=False)
    return name


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("router-key")
    directory.chmod(0o755)
    path = directory / "api-key"
    path.write_text(KEY + "\n", encoding="ascii")
    path.chmod(0o644)  # the router runs as UID 10000
    return path


@dataclass
class Router:
    container: str
    port: int
    metrics_port: int
    backends: list[Backend]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        result = subprocess.run(
            ["docker", "logs", self.container], capture_output=True, text=True, check=False
        )
        return result.stdout + result.stderr

    def inspect(self) -> str:
        result = subprocess.run(
            ["docker", "inspect", self.container], capture_output=True, text=True, check=True
        )
        return result.stdout


def _wait_ready(router: Router, workers: int) -> None:
    """Until the router lists every worker as healthy (it registers them in the background)."""
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"{router.url}/workers", headers={"Authorization": f"Bearer {KEY}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                last = response.read().decode()
            data = json.loads(last)
            healthy = [w for w in data.get("workers", []) if w.get("is_healthy")]
            if len(healthy) == workers:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    pytest.fail(f"the router did not list {workers} healthy workers: {last}\n{router.logs()}")


def start_router(
    image: str, key_file: Path, backends: list[Backend], name: str, *extra: str
) -> Router:
    port, metrics_port = free_port(), free_port()
    container = f"kthybrid-router-test-{name}-{os.getpid()}"
    command = [
        "docker", "run", "-d", "--name", container, "--label", LABEL, "--network", "host",
        "-v", f"{key_file}:{KEY_PATH_IN_CONTAINER}:ro",
        "-e", f"KTHYBRID_API_KEY_FILE={KEY_PATH_IN_CONTAINER}",
        image,
        "--host", "127.0.0.1", "--port", str(port),
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
        "--worker-urls", *(b.url for b in backends),
        *extra,
    ]  # fmt: skip
    subprocess.run(command, capture_output=True, check=True)
    router = Router(container, port, metrics_port, backends)
    _wait_ready(router, len(backends))
    return router


def stop_router(router: Router) -> None:
    subprocess.run(["docker", "rm", "-f", router.container], capture_output=True, check=False)


@pytest.fixture(scope="session")
def backends(key_file: Path) -> Iterator[list[Backend]]:
    # Each completion takes 0.3 s, so that concurrent requests load the backends unevenly.
    started = [start_backend(f"backend-{i}", key_file, ttft=0.3) for i in range(3)]
    yield started
    for backend in started:
        stop_backend(backend)


@pytest.fixture(scope="session")
def router(router_image: str, key_file: Path, backends: list[Backend]) -> Iterator[Router]:
    """The default policy (cache_aware) in front of three stand-ins."""
    started = start_router(router_image, key_file, backends, "cache-aware")
    yield started
    stop_router(started)


@pytest.fixture(scope="session")
def failover_router(router_image: str, key_file: Path) -> Iterator[Router]:
    """Round-robin over two stand-ins of its own, so that one can be killed."""
    pair = [start_backend(f"failover-{i}", key_file, ttft=0.01) for i in range(2)]
    started = start_router(
        router_image, key_file, pair, "failover", "--policy", "round_robin",
        "--health-check-interval-secs", "1", "--health-failure-threshold", "2",
    )  # fmt: skip
    yield started
    stop_router(started)
    for backend in pair:
        stop_backend(backend)
