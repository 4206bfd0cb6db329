"""The stand-in (sglang-kt's metrics code in the image) and the real Prometheus: helpers.

Both listen on the loopback only. The stand-in plans from a MoE checkpoint with
DeepSeek-V4-Flash's expert shapes on a 4-node host tree with a tune record (measured
threads, a decode ceiling),
exactly as `serve` would, and exports the plan beside sglang's metrics.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.launcher_fixtures import HostSpec, ModelSpec, build_host, build_model

ROOT = Path(__file__).resolve().parents[2]

MONITORING = ROOT / "helm/kthybrid/files/monitoring"
RULES = MONITORING / "kthybrid.rules.yaml"
DASHBOARD = MONITORING / "dashboard.json"
API_KEY = "obs-test-key-0123456789"
GPU = "NVIDIA GeForce RTX 5090,32607MiB,12.0"
# A MoE with DeepSeek-V4-Flash's expert shapes but not its run-time needs (nvcc, which an
# image built offline lacks), as the image tests use.
MODEL = "Qwen3-MoE-V4-shaped"
CONTAINER = "kthybrid-obs-standin"
STANDIN_START_TIMEOUT = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


@dataclass(frozen=True)
class StandIn:
    healthy: str  # host:port
    overloaded: str
    down: str  # nothing listens there
    work: Path
    env: dict[str, str]

    def metrics(self, target: str) -> str:
        code, body = http_get(f"http://{target}/metrics")
        assert code == 200, body
        return body


@dataclass(frozen=True)
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": expr})
        code, body = http_get(f"{self.url}/api/v1/query?{query}")
        data = json.loads(body)
        assert code == 200 and data["status"] == "success", f"{expr}: {body}"
        return list(data["data"]["result"])

    def api(self, path: str) -> Any:
        code, body = http_get(f"{self.url}{path}")
        assert code == 200, body
        return json.loads(body)["data"]


def _write_inputs(work: Path) -> dict[str, str]:
    """Host tree, model, tune record and key file; the KTHYBRID_* the stand-in plans with."""
    from kthybrid_serve.cpubench.tuning import choose, store
    from kthybrid_serve.host.host import read_host
    from kthybrid_serve.model.experts import ExpertShape
    from kthybrid_serve.plan.records import tune_dir, tune_key

    spec = HostSpec(sockets=2, nodes_per_socket=2, cores_per_node=16, mem_bytes=256 * 1024**3)
    host_root = build_host(work / "host", spec)
    moe = ModelSpec(model_type="qwen3_moe", architecture="Qwen3MoeForCausalLM")
    model = build_model(work / "models" / MODEL, moe)
    cache = work / "cache"
    host = read_host(str(host_root), [GPU])
    shape = ExpertShape(MODEL, 4096, 2048, 6, 256, 43)
    runs = [{"threads": t, "pools": 4, "threads_per_pool": [t // 4] * 4, "numa_nodes": [0, 1, 2, 3],
             "labels": ["sweep"], "gbps": g} for t, g in ((56, 80.0), (60, 70.0))]  # fmt: skip
    measured = {"runs": runs, "plan_threads": 60, "plan_gbps": 70.0, "bandwidth_gbps": 200.0}
    store(tune_dir({"XDG_CACHE_HOME": str(cache)}), tune_key(host, shape, "MXFP4"), measured,
          choose(measured, host.physical_cores_by_node()))  # fmt: skip
    key = work / "api-key"
    key.write_text(API_KEY)
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    subprocess.run(["chmod", "-R", "a+w", str(cache)], check=True)
    return {
        "KTHYBRID_HOST_ROOT": str(host_root),
        "KTHYBRID_MODEL": str(model),
        "KTHYBRID_GPU": GPU,
        "KTHYBRID_API_KEY_FILE": str(key),
        "KTHYBRID_SERVED_MODEL_NAME": MODEL,
        "XDG_CACHE_HOME": str(cache),
    }


def _docker_run(image: str, work: Path, env: dict[str, str], ports: tuple[int, int]) -> None:
    subprocess.run(["docker", "rm", "-f", CONTAINER], capture_output=True, check=False)
    args = ["docker", "run", "-d", "--name", CONTAINER, "--network", "host",
            "--label", "io.kthybrid.test=observability",
            "-v", f"{work}:{work}", "-v", f"{ROOT / 'tests/observability'}:/standin:ro",
            "-v", f"{ROOT / 'docker/launcher'}:/launcher:ro", "-e", "PYTHONPATH=/launcher",
            "-e", "PYTHONDONTWRITEBYTECODE=1", "-e", "PYTHONWARNINGS=ignore"]  # fmt: skip
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
    args += ["--entrypoint", "python3", image, "/standin/standin.py", *map(str, ports)]
    subprocess.run(args, check=True, capture_output=True, text=True)


def _wait_for(target: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        inspect = ["docker", "inspect", "-f", "{{.State.Running}}", CONTAINER]
        state = subprocess.run(inspect, capture_output=True, text=True, check=False).stdout.strip()
        if state != "true":
            logs = subprocess.run(["docker", "logs", CONTAINER], capture_output=True, text=True)
            pytest.fail(f"the stand-in stopped:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        try:
            if http_get(f"http://{target}/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(2)
    pytest.fail(f"the stand-in did not answer on {target} within {STANDIN_START_TIMEOUT} s")


def wait_for_series(prom: Prometheus, expr: str, timeout: float = 90) -> list[dict[str, Any]]:
    """The query's result once it has one (scrapes and rate windows need a few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        result = prom.query(expr)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(1)
