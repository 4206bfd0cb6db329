"""How a build gets its secrets: served on the loopback for one build, fetched by one command.

builder.secret_server serves them; docker/scripts/with-build-secrets.sh (run here on the host,
as the build runs it inside a RUN step) fetches them, hands them to its command and removes
them. The build that proves no image keeps them is tests/builder/test_build_leaves_no_secret.py.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from builder.matrix import REPO_ROOT
from builder.secret_server import serve_secrets

SCRIPT = REPO_ROOT / "docker" / "scripts" / "with-build-secrets.sh"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str) -> bytes:
    with NO_PROXY.open(url, timeout=5) as response:
        data: bytes = response.read()
    return data


def test_the_server_answers_only_under_its_token() -> None:
    with serve_secrets({"index-url": b"https://u:p@example.com/simple"}) as url:
        assert url.startswith("http://127.0.0.1:")
        assert fetch(f"{url}/index-url") == b"https://u:p@example.com/simple"
        base = url.rsplit("/", 1)[0]
        for wrong in (f"{base}/index-url", f"{base}/not-the-token/index-url", f"{url}/ca.pem"):
            with pytest.raises(urllib.error.HTTPError) as error:
                fetch(wrong)
            assert error.value.code == 404


def test_the_server_is_gone_when_the_build_ends() -> None:
    with serve_secrets({"ca.pem": b"pem"}) as url:
        assert fetch(f"{url}/ca.pem") == b"pem"
    with pytest.raises(urllib.error.URLError):
        fetch(f"{url}/ca.pem")


def run_script(
    command: str, server: str | None, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path)}
    if server is not None:
        env["FTP_PROXY"] = server
    return subprocess.run(
        ["bash", str(SCRIPT), "bash", "-c", command],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


SHOW = (
    'echo "index=${PIP_INDEX_URL:-} uv=${UV_INDEX_URL:-} ftp=${FTP_PROXY:-}"; '
    'cat "$PIP_CERT"; echo; echo "ssl=$SSL_CERT_FILE"'
)


def test_the_command_gets_the_secrets_and_they_are_gone_after(tmp_path: Path) -> None:
    secrets = {"index-url": b"https://u:p@example.com/simple", "ca.pem": b"PEM-BYTES"}
    with serve_secrets(secrets) as url:
        result = run_script(SHOW, url, tmp_path)
    assert result.returncode == 0, result.stderr
    first, pem, ssl = result.stdout.splitlines()
    assert first == "index=https://u:p@example.com/simple uv=https://u:p@example.com/simple ftp="
    assert pem == "PEM-BYTES"
    assert not Path(ssl.removeprefix("ssl=")).exists()
    assert list(tmp_path.iterdir()) == []


def test_without_a_server_the_command_runs_with_no_secret(tmp_path: Path) -> None:
    result = run_script('echo "index=${PIP_INDEX_URL:-none}"', None, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "index=none"


def test_an_unreachable_server_stops_the_step_with_one_line(tmp_path: Path) -> None:
    with serve_secrets({}) as url:
        pass  # stopped: the address leads nowhere
    result = run_script("echo ran", url, tmp_path)
    assert result.returncode == 1
    assert "ran" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "cannot reach the builder's secret server" in lines[0]
    assert list(tmp_path.iterdir()) == []
