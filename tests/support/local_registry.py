"""A real OCI registry (Debian's docker-registry, distribution 2.8) on the loopback.

Plain HTTP, or htpasswd basic auth behind TLS with a certificate made on the spot. The engine
treats 127.0.0.0/8 as insecure: it speaks HTTP there, or HTTPS without checking the
certificate, so pushes need no change to the shared engine's configuration.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import requests
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO_ROOT / "tools" / "docker-registry.sh"
BINARY = "docker-registry"


class RegistryStartError(Exception):
    """The registry did not come up; the message carries its log."""


@dataclass(frozen=True)
class LocalRegistry:
    host: str
    root: Path
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.ca_file else "http"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def self_signed(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "registry.key", directory / "registry.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


def config(root: Path, port: int, htpasswd: Path | None, tls: tuple[Path, Path] | None) -> str:
    http: dict[str, object] = {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)}
    document: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
        },
        "http": http,
    }
    if tls:
        http["tls"] = {"key": str(tls[0]), "certificate": str(tls[1])}
    if htpasswd:
        document["auth"] = {"htpasswd": {"realm": "kthybrid-test", "path": str(htpasswd)}}
    return yaml.safe_dump(document)


def _wait(url: str, process: subprocess.Popen[bytes], log: Path, verify: bool | str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if requests.get(url, timeout=2, verify=verify).status_code in (200, 401):
                return
        except requests.RequestException:
            time.sleep(0.2)
    raise RegistryStartError(f"docker-registry did not answer at {url}:\n{log.read_text()[-2000:]}")


@contextmanager
def local_registry(
    root: Path, username: str | None = None, password: str | None = None, tls: bool = False
) -> Iterator[LocalRegistry]:
    """Start docker-registry on a free loopback port; stop it and keep nothing after."""
    binary = shutil.which(BINARY)
    if binary is None:
        raise RegistryStartError(f"{BINARY} is not installed: run tools/docker-registry.sh")
    root.mkdir(parents=True, exist_ok=True)
    htpasswd = None
    if username and password:
        htpasswd = root / "htpasswd"
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
        htpasswd.write_text(f"{username}:{hashed}\n")
    pair = self_signed(root) if tls else None
    port = free_port()
    (root / "config.yml").write_text(config(root, port, htpasswd, pair))
    log = root / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "serve", str(root / "config.yml")], stdout=out, stderr=subprocess.STDOUT
        )
    registry = LocalRegistry(
        f"127.0.0.1:{port}", root, username, password, pair[1] if pair else None
    )
    try:
        _wait(
            f"{registry.scheme}://{registry.host}/v2/", process, log, str(pair[1]) if pair else True
        )
        yield registry
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root / "data", ignore_errors=True)
