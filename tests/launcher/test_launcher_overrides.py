"""Flags and KTHYBRID_* variables override the plan, and the plan says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.launcher_fixtures import GB, RTX5090, Result

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


def test_api_key_reaches_sglang_from_its_file_and_no_command_line(
    host: Path, v4_flash: Path, tmp_path: Path
) -> None:
    """The key is in no argv (/proc/<pid>/cmdline), no environment and no server_args repr."""
    key = "k3y-" + "9" * 40
    key_file = tmp_path / "api-key"
    key_file.write_text(key + "\n")
    fake = tmp_path / "fake"
    (fake / "sglang" / "srt").mkdir(parents=True)
    (fake / "sglang" / "__init__.py").write_text("")
    (fake / "sglang" / "srt" / "__init__.py").write_text("")
    (fake / "sglang" / "srt" / "utils.py").write_text(
        "def kill_process_tree(pid, include_parent=True):\n    pass\n"
    )
    (fake / "sglang" / "srt" / "server_args.py").write_text(
        "import dataclasses\n"
        "@dataclasses.dataclass\n"
        "class ServerArgs:\n"
        "    argv: list\n"
        "    api_key: object = None\n"
        "def prepare_server_args(argv):\n"
        "    return ServerArgs(list(argv))\n"
    )
    (fake / "sglang" / "launch_server.py").write_text(
        "import json, os\n"
        "def run_server(server_args):\n"
        "    with open('/proc/self/cmdline', 'rb') as handle:\n"
        "        cmdline = handle.read().decode()\n"
        "    report = {'cmdline': cmdline, 'env': dict(os.environ), 'repr': repr(server_args),\n"
        "              'key': str(server_args.api_key)}\n"
        "    open(os.environ['FAKE_REPORT'], 'w').write(json.dumps(report))\n"
    )
    report = tmp_path / "report.json"
    env = {
        **os.environ,
        "PYTHONPATH": f"{fake}{os.pathsep}{REPO / 'docker' / 'launcher'}",
        "FAKE_REPORT": str(report),
        "KTHYBRID_NUMA_POLICY": "none",
        "KTHYBRID_API_KEY_FILE": str(key_file),
    }
    done = subprocess.run(
        [sys.executable, "-m", "kthybrid_serve", "--host-root", str(host), "--model",
         str(v4_flash), "--gpu", RTX5090],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(report.read_text())
    assert seen["key"] == key
    assert "kthybrid_serve.sglang_entry" in seen["cmdline"]
    assert key not in seen["cmdline"] and key not in json.dumps(seen["env"])
    assert key not in seen["repr"] and "<redacted>" in seen["repr"]
    assert key not in done.stdout + done.stderr


@pytest.mark.parametrize("content", ["", "short", "two words here and more", "é" * 20])
def test_a_bad_api_key_file_is_one_line(
    run_cli: Cli, host: Path, v4_flash: Path, tmp_path: Path, content: str
) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text(content)
    result = run_cli("plan", "--host-root", str(host), "--model", str(v4_flash),
                     "--gpu", RTX5090, "--api-key-file", str(key_file))  # fmt: skip
    assert result.code == 2, result.err
    assert len(result.err.strip().splitlines()) == 1 and "KTHYBRID_API_KEY_FILE" in result.err
