"""`kthybrid-serve chat` and `bench-serve` as a user runs them, against stand-in servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.openai_standin import free_port

LAUNCHER = str(Path(sys.executable).parent / "kthybrid-serve")


def _run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([LAUNCHER, *args], input=stdin, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120, check=False)  # fmt: skip


def _where(url: str) -> list[str]:
    return ["--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]]


def test_bench_serve_prints_json_and_writes_it_to_the_cache(
    standin: Callable[..., str], key_file: Path, tmp_path: Path
) -> None:
    url = standin(ttft=0.05, itl=0.01, api_key=key_file.read_text().strip())
    result = _run(["bench-serve", "--json", *_where(url), "--api-key-file", str(key_file),
                   "--bench-concurrency", "1,2", "--bench-duration", "2",
                   "--bench-output-tokens", "8", "--bench-prompt-tokens", "16"],
                  {"XDG_CACHE_HOME": str(tmp_path)})  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [level["concurrency"] for level in data["levels"]] == [1, 2]
    assert all(level["errors"] == 0 and level["requests"] > 0 for level in data["levels"])
    assert data["api_key"] is True and data["cpu_decode_ceiling_tokens_per_s"] is None
    assert data["ceiling_note"].startswith("no plan here")
    assert json.loads((tmp_path / "bench" / "serving.json").read_text())["levels"]
    assert "level 2/2" in result.stderr  # the progress display


def test_bench_serve_with_a_wrong_key_is_one_line_and_exit_30(
    standin: Callable[..., str], key_file: Path
) -> None:
    url = standin(api_key="another-key-0123456789abcdef")
    result = _run(["bench-serve", *_where(url), "--api-key-file", str(key_file)], {})
    assert result.returncode == 30
    assert result.stderr.count("\n") == 1 and "refused the API key" in result.stderr


def test_chat_with_a_key_streams_and_exits_0(standin: Callable[..., str], key_file: Path) -> None:
    url = standin(tokens=3, api_key=key_file.read_text().strip())
    result = _run(["chat", *_where(url), "--api-key-file", str(key_file)], {}, "hello\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == "t0 t1 t2 "


def test_chat_without_a_key_streams_and_exits_0(standin: Callable[..., str]) -> None:
    url = standin(tokens=3)
    result = _run(["chat", *_where(url)], {}, "hello\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == "t0 t1 t2 "


def test_chat_with_a_wrong_key_is_one_line_and_exit_30(
    standin: Callable[..., str], key_file: Path
) -> None:
    url = standin(api_key="another-key-0123456789abcdef")
    result = _run(["chat", *_where(url), "--api-key-file", str(key_file)], {}, "hello\n")
    assert result.returncode == 30
    assert result.stderr == (
        f"kthybrid-serve: error: the server at http://127.0.0.1:{url.rsplit(':', 1)[1]}/v1 "
        "refused the API key (HTTP 401); check KTHYBRID_API_KEY_FILE\n"
    )


def test_chat_with_no_server_is_one_line_and_exit_30() -> None:
    result = _run(["chat", "--host", "127.0.0.1", "--port", str(free_port())], {}, "hello\n")
    assert result.returncode == 30 and result.stderr.count("\n") == 1, result.stderr


def test_ctrl_c_during_an_answer_is_one_line_and_exit_130(standin: Callable[..., str]) -> None:
    url = standin(ttft=0.05, itl=0.2, tokens=100)
    pipe = subprocess.PIPE
    process = subprocess.Popen(
        [LAUNCHER, "chat", *_where(url)], stdin=pipe, stdout=pipe, stderr=pipe, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("hello\n")
    process.stdin.flush()
    process.stdout.readline()  # the greeting
    time.sleep(1.0)  # mid-answer
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err == "kthybrid-serve: chat stopped (Ctrl-C)\n"
    assert out.startswith("t0 t1 ")


def test_ctrl_c_during_a_sweep_is_one_line_exit_130_and_no_file(
    standin: Callable[..., str], tmp_path: Path
) -> None:
    url = standin(ttft=0.05, itl=0.05)
    process = subprocess.Popen(
        [LAUNCHER, "bench-serve", *_where(url), "--bench-duration", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)},
    )  # fmt: skip
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert err.splitlines()[-1] == "kthybrid-serve: bench-serve stopped (Ctrl-C); nothing written"
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "bench").exists()
