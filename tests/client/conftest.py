"""Fixtures of the client tests: stand-in OpenAI-compatible servers in their own processes.

A stand-in runs as a separate process (not a thread of the test), so its timing does not
wait on the client's interpreter lock; each one is stopped when the session ends.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import openai_standin
from tests.support.openai_standin import TEST_KEY, free_port


@pytest.fixture(scope="session")
def standin() -> Iterator[Callable[..., str]]:
    """Start a stand-in with these flags (e.g. ttft=0.2); returns its base URL."""
    processes: list[subprocess.Popen[str]] = []

    def start(**flags: object) -> str:
        port = free_port()
        argv = [sys.executable, openai_standin.__file__, "--host", "127.0.0.1",
                "--port", str(port)]  # fmt: skip
        for name, value in flags.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening" in line, f"the stand-in did not start: {line!r}"
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-key"
    path.write_text(TEST_KEY + "\n")
    return path
