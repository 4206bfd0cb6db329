"""Flags and KTHYBRID_* variables override the plan, and the plan says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RTX5090, Result
from launcher_fixtures import GB

Cli = Callable[..., Result]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def host(make_host: Callable[..., Path]) -> Path:
    return make_host(sockets=2, nodes_per_socket=2, cores_per_node=16, mem_bytes=256 * GB)


def items(result: Result) -> dict[str, dict[str, str]]:
    return {i["name"]: i for i in result.json["items"]}  # type: ignore[union-attr,index,misc]


def test_env_override_shows_as_env(
    run_cli: Cli, host: Path, v4_flash: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KTHYBRID_KT_CPUINFER", "32")
    monkeypatch.setenv("KTHYBRID_MODEL", str(v4_flash))
    monkeypatch.setenv("KTHYBRID_GPU", RTX5090)
    result = run_cli("plan", "--host-root", str(host), "--json")
    assert result.code == 0, result.err
    assert result.json["kt_cpuinfer"] == 32
    assert items(result)["--kt-cpuinfer"]["source"] == "env KTHYBRID_KT_CPUINFER"


def test_flag_beats_env(
    run_cli: Cli, host: Path, v4_flash: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KTHYBRID_KT_NUM_GPU_EXPERTS", "4")
    monkeypatch.setenv("KTHYBRID_CONTEXT_LENGTH", "8192")
    result = run_cli(
        "plan", "--host-root", str(host), "--model", str(v4_flash), "--gpu", RTX5090, "--json",
        "--kt-num-gpu-experts", "8",
    )  # fmt: skip
    assert result.json["kt_num_gpu_experts"] == 8
    assert items(result)["--kt-num-gpu-experts"]["source"] == "flag --kt-num-gpu-experts"
    assert items(result)["--context-length"]["source"] == "env KTHYBRID_CONTEXT_LENGTH"
    argv = result.json["argv"]
    assert argv[argv.index("--context-length") + 1] == "8192"  # type: ignore[union-attr,index]


def test_multi_node_and_extra_args_reach_sglang(
    run_cli: Cli, host: Path, v4_flash: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KTHYBRID_NNODES", "2")
    monkeypatch.setenv("KTHYBRID_NODE_RANK", "1")
    monkeypatch.setenv("KTHYBRID_DIST_INIT_ADDR", "10.0.0.1:5000")
    monkeypatch.setenv(
        "KTHYBRID_EXTRA_ARGS", '["--log-level", "debug", "--enable-metrics", "--name", "a b"]'
    )
    monkeypatch.setenv("KTHYBRID_NUMA_POLICY", "none")
    result = run_cli(
        "plan", "--host-root", str(host), "--model", str(v4_flash), "--gpu", RTX5090, "--json"
    )
    assert result.code == 0, result.err
    words = result.json["argv"]
    assert isinstance(words, list)
    argv = " ".join(words)
    assert not argv.startswith("numactl")
    assert "--tensor-parallel-size 2" in argv
    assert "--nnodes 2 --node-rank 1 --dist-init-addr 10.0.0.1:5000" in argv
    # A JSON list travels as it is: "a b" stays one argument.
    assert words[-5:] == ["--log-level", "debug", "--enable-metrics", "--name", "a b"]


def test_the_image_owns_the_arch_lists(
    run_cli: Cli, host: Path, v4_flash: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "12.0a")
    result = run_cli(
        "plan", "--host-root", str(host), "--model", str(v4_flash), "--gpu", RTX5090, "--json"
    )
    env = result.json["env"]
    assert isinstance(env, dict)
    assert "TORCH_CUDA_ARCH_LIST" not in env and "FLASHINFER_CUDA_ARCH_LIST" not in env


def test_serve_execs_the_server_and_sigterm_stops_it(
    host: Path, v4_flash: Path, tmp_path: Path
) -> None:
    """`serve` replaces itself with the server: same pid, so SIGTERM reaches it."""
    fake = tmp_path / "fake"
    (fake / "sglang").mkdir(parents=True)
    (fake / "sglang" / "__init__.py").write_text("")
    (fake / "sglang" / "launch_server.py").write_text(
        "import os, signal, sys, time\n"
        "ready = os.environ['FAKE_READY']\n"
        "def stop(signum, frame):\n"
        "    open(ready + '.term', 'w').write(' '.join(sys.argv[1:]))\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "open(ready, 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    ready = tmp_path / "ready"
    env = {
        **os.environ,
        "PYTHONPATH": f"{fake}{os.pathsep}{REPO / 'docker' / 'launcher'}",
        "FAKE_READY": str(ready),
        "KTHYBRID_NUMA_POLICY": "none",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "kthybrid_serve", "--host-root", str(host), "--model",
         str(v4_flash), "--gpu", RTX5090],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert ready.exists(), process.communicate()
        time.sleep(0.2)
        assert int(ready.read_text()) == process.pid
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert "--kt-cpuinfer 60" in (tmp_path / "ready.term").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
