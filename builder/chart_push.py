"""Packages the chart (`helm package`) and pushes it to a registry as an OCI artifact.

helm reads registry credentials only from its registry config file, so a login goes to a
config file in a private temporary directory (password on stdin, never in argv) that is
removed when the push is done: nothing of it stays in ~/.config/helm or elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from builder.matrix import REPO_ROOT
from builder.oci import is_loopback, speaks_plain_http
from builder.push import Credentials, PushError, check_registry

CHART_DIR = REPO_ROOT / "helm" / "kthybrid"
CHART_PATH = "charts"
_DIGEST = re.compile(r"^Digest:\s*(sha256:[a-f0-9]{64})\s*$", re.MULTILINE)
_PACKAGED = re.compile(r"saved it to:\s*(\S+\.tgz)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ChartPush:
    package: Path
    reference: str
    digest: str


def helm_binary() -> str:
    local = REPO_ROOT / ".tools" / "bin" / "helm"
    found = str(local) if local.exists() else shutil.which("helm")
    if not found:
        raise PushError("helm not found: run `make tools` (installs it into .tools/bin)")
    return found


def _run(
    command: list[str], what: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> str:
    result = subprocess.run(
        command, input=stdin, capture_output=True, text=True, check=False, env=env, timeout=600
    )
    if result.returncode != 0:
        raise PushError(f"{what} failed (exit {result.returncode}): {result.stderr.strip()[-600:]}")
    return result.stdout + result.stderr


def package_chart(out_dir: Path, chart_dir: Path = CHART_DIR) -> Path:
    """`helm package` into out_dir; returns the .tgz it wrote."""
    out_dir.mkdir(parents=True, exist_ok=True)
    output = _run(
        [helm_binary(), "package", str(chart_dir), "--destination", str(out_dir)], "helm package"
    )
    match = _PACKAGED.search(output)
    if not match:
        raise PushError(f"helm package did not say where it wrote the chart: {output.strip()}")
    return Path(match.group(1))


def transport_flags(host: str, ca_file: str | None) -> list[str]:
    """The same rules as the image push: plain HTTP only on the loopback, else verified TLS."""
    if is_loopback(host) and speaks_plain_http(host):
        return ["--plain-http"]
    return ["--ca-file", ca_file] if ca_file else []


@contextmanager
def registry_session(
    host: str, credentials: Credentials | None, flags: list[str]
) -> Iterator[dict[str, str]]:
    """Environment for helm with a login that lives only as long as the block."""
    with tempfile.TemporaryDirectory(prefix="kthybrid-helm-") as private:
        env = dict(os.environ)
        env["HELM_REGISTRY_CONFIG"] = str(Path(private) / "registry.json")
        env["HELM_CONTENT_CACHE"] = str(Path(private) / "content")
        if credentials is not None:
            login = [helm_binary(), "registry", "login", host, "--username", credentials.username]
            login += ["--password-stdin", *flags]
            _run(login, f"helm registry login {host}", stdin=credentials.password, env=env)
        yield env


def push_chart(
    registry: str,
    out_dir: Path,
    credentials: Credentials | None = None,
    ca_file: str | None = None,
) -> ChartPush:
    """Package the chart and push it to oci://<registry>/charts; returns its digest."""
    registry = check_registry(registry)
    host = registry.split("/", 1)[0]
    package = package_chart(out_dir)
    flags = transport_flags(host, ca_file)
    with registry_session(host, credentials, flags) as env:
        output = _run(
            [helm_binary(), "push", str(package), f"oci://{registry}/{CHART_PATH}", *flags],
            f"helm push to oci://{registry}/{CHART_PATH}",
            env=env,
        )
    match = _DIGEST.search(output)
    if not match:
        raise PushError(f"helm push did not report a digest: {output.strip()[-300:]}")
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))
    reference = f"oci://{registry}/{CHART_PATH}/{chart['name']}:{chart['version']}"
    return ChartPush(package, reference, match.group(1))
