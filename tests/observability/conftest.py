"""One stand-in (sglang-kt's metrics code in the image) and one real Prometheus per session."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from observability_stack import (
    CONTAINER,
    RULES,
    STANDIN_START_TIMEOUT,
    Prometheus,
    StandIn,
    _docker_run,
    _wait_for,
    _write_inputs,
    free_port,
    http_get,
)


@pytest.fixture(scope="session")
def standin(image_name: str) -> Iterator[StandIn]:
    work = Path(tempfile.mkdtemp(prefix="kthybrid-obs-"))
    work.chmod(0o755)
    try:
        env = _write_inputs(work)
        ports = (free_port(), free_port())
        _docker_run(image_name, work, env, ports)
        deadline = time.monotonic() + STANDIN_START_TIMEOUT
        healthy, overloaded = (f"127.0.0.1:{p}" for p in ports)
        _wait_for(healthy, deadline)
        _wait_for(overloaded, deadline)
        yield StandIn(healthy, overloaded, f"127.0.0.1:{free_port()}", work, env)
    finally:
        subprocess.run(["docker", "rm", "-f", CONTAINER], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def prometheus(standin: StandIn) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: run tools/install-prometheus.sh (make tools does)")
    work = Path(tempfile.mkdtemp(prefix="kthybrid-prom-"))
    shutil.copy(RULES, work / "kthybrid.rules.yaml")
    targets = [
        {"targets": [standin.healthy], "labels": {"scenario": "healthy"}},
        {"targets": [standin.overloaded], "labels": {"scenario": "overloaded"}},
        {"targets": [standin.down], "labels": {"scenario": "down"}},
    ]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["kthybrid.rules.yaml"],
        "scrape_configs": [{"job_name": "kthybrid", "static_configs": targets}],
    }
    (work / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    log = (work / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(60):
            try:
                if http_get(f"{url}/-/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"prometheus did not start:\n{(work / 'prometheus.log').read_text()}")
        yield Prometheus(url)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
