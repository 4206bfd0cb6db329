"""A registry with htpasswd behind TLS: the CLI pushes image, SBOM and chart with credentials
from the environment, and the password is nowhere afterwards: not in any output, not in the
files the push leaves, not in docker's or helm's config files, not in the engine's log."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from registry_helpers import REPO_ROOT, USER, run_builder

from builder.chart_push import helm_binary, registry_session
from builder.oci import OciRegistry, attach_sbom, split_repository
from builder.push import Credentials, PushError
from tests.support.local_registry import LocalRegistry
from tests.support.secret_scan import scan  # the build's secret scan, reused

DOCKERD_LOG = Path("/var/log/dockerd.log")
CONFIG_FILES = (
    Path.home() / ".docker" / "config.json",
    Path.home() / ".config" / "helm" / "registry" / "config.json",
)


@dataclass(frozen=True)
class AuthRun:
    registry: LocalRegistry
    record: dict[str, str]
    outputs: list[str]
    out_dir: Path
    sbom_file: Path
    needles: list[bytes]


@pytest.fixture(scope="module")
def auth_run(
    auth_registry: LocalRegistry,
    credentials: Credentials,
    small_image: str,
    image_sbom: bytes,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AuthRun]:
    out_dir = tmp_path_factory.mktemp("auth-out")
    env = {
        "KTHYBRID_REGISTRY_USER": credentials.username,
        "KTHYBRID_REGISTRY_PASSWORD": credentials.password,
    }
    ca = str(auth_registry.ca_file)
    host = auth_registry.host
    outputs = []
    push = run_builder(
        "push", "--arch", "sm120", "--image", small_image, "--registry", host,
        "--out-dir", str(out_dir / "image"), "--no-sbom", "--ca-file", ca, env=env,
    )  # fmt: skip
    outputs.append(push.stdout + push.stderr)
    assert push.returncode == 0, outputs[-1]
    record = json.loads((out_dir / "image" / "push.json").read_text())
    registry_host, name = split_repository(record["repository"])
    attach_sbom(OciRegistry(registry_host, credentials, ca), name, record["digest"], image_sbom)
    sbom_file = out_dir / "fetched" / "sbom.cdx.json"
    fetch = run_builder(
        "fetch-sbom", "--image", record["reference"], "--output", str(sbom_file), "--ca-file", ca,
        env=env,
    )  # fmt: skip
    outputs.append(fetch.stdout + fetch.stderr)
    assert fetch.returncode == 0, outputs[-1]
    chart = run_builder(
        "push-chart", "--registry", host, "--out-dir", str(out_dir / "chart"), "--ca-file", ca,
        env=env,
    )  # fmt: skip
    outputs.append(chart.stdout + chart.stderr)
    assert chart.returncode == 0, outputs[-1]
    needles = [
        credentials.password.encode(),
        base64.b64encode(f"{USER}:{credentials.password}".encode()),
    ]
    yield AuthRun(auth_registry, record, outputs, out_dir, sbom_file, needles)


@pytest.mark.docker
@pytest.mark.image
def test_the_sbom_fetched_with_credentials_is_the_image_s_file(
    auth_run: AuthRun, image_sbom: bytes
) -> None:
    assert auth_run.sbom_file.read_bytes() == image_sbom


@pytest.mark.docker
def test_a_push_without_credentials_is_refused_with_what_to_set(
    auth_registry: LocalRegistry, small_image: str, tmp_path: Path
) -> None:
    result = run_builder(
        "push", "--arch", "sm120", "--image", small_image, "--registry", auth_registry.host,
        "--out-dir", str(tmp_path), "--no-sbom",
    )  # fmt: skip
    assert result.returncode == 1
    assert "KTHYBRID_REGISTRY_USER" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "push.json").exists()


@pytest.mark.docker
def test_fetching_the_sbom_without_credentials_is_refused(
    auth_run: AuthRun, tmp_path: Path
) -> None:
    result = run_builder(
        "fetch-sbom", "--image", auth_run.record["reference"], "--output", str(tmp_path / "s"),
        "--ca-file", str(auth_run.registry.ca_file),
    )  # fmt: skip
    assert result.returncode == 1
    assert "refused" in result.stderr and "KTHYBRID_REGISTRY_PASSWORD" in result.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.docker
def test_the_chart_renders_from_the_authenticated_registry(
    auth_run: AuthRun, credentials: Credentials
) -> None:
    flags = ["--ca-file", str(auth_run.registry.ca_file)]
    with registry_session(auth_run.registry.host, credentials, flags) as env:
        result = subprocess.run(
            [helm_binary(), "template", "kthybrid",
             f"oci://{auth_run.registry.host}/charts/kthybrid", *flags],
            env=env, capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "kind: Deployment" in result.stdout


@pytest.mark.docker
def test_no_output_of_the_push_holds_the_password(auth_run: AuthRun) -> None:
    assert scan([o.encode() for o in auth_run.outputs], auth_run.needles) == []


@pytest.mark.docker
def test_no_file_the_push_leaves_holds_the_password(auth_run: AuthRun) -> None:
    files = [p for p in auth_run.out_dir.rglob("*") if p.is_file()]
    build = REPO_ROOT / "build"
    files += [p for p in build.rglob("*") if p.is_file()] if build.exists() else []
    assert files
    for path in files:
        assert scan([path.read_bytes()], auth_run.needles) == [], path


@pytest.mark.docker
def test_no_docker_or_helm_config_names_the_registry_or_holds_the_password(
    auth_run: AuthRun,
) -> None:
    for path in CONFIG_FILES:
        if path.exists():
            data = path.read_bytes()
            assert scan([data], auth_run.needles) == [], path
            assert auth_run.registry.host.encode() not in data, path


@pytest.mark.docker
def test_the_engine_s_and_the_registry_s_logs_hold_no_password(
    auth_run: AuthRun,
) -> None:
    logs = [auth_run.registry.root / "registry.log"]
    logs += [DOCKERD_LOG] if DOCKERD_LOG.exists() else []
    for path in logs:
        with path.open("rb") as log:
            assert scan(iter(lambda: log.read(1 << 20), b""), auth_run.needles) == [], path


def test_a_tls_registry_whose_ca_is_not_given_says_to_pass_ca_file(
    auth_registry: LocalRegistry, credentials: Credentials
) -> None:
    with pytest.raises(PushError, match="pass --ca-file"):
        OciRegistry(auth_registry.host, credentials)
