"""The chart as an OCI artifact: `helm package`, `helm push`, then install and template from oci://."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from registry_helpers import Pushed

from builder.chart_push import CHART_DIR, ChartPush, helm_binary
from builder.push import record_push

CHART = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())


def helm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """helm with its caches and registry config in a private directory."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "HELM_REGISTRY_CONFIG": str(home / "registry.json"),
        "HELM_CONTENT_CACHE": str(home / "content"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
    }
    return subprocess.run(
        [helm_binary(), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_chart_is_pushed_under_charts_with_its_version(chart_plain: ChartPush) -> None:
    host = chart_plain.reference.removeprefix("oci://").split("/", 1)[0]
    assert chart_plain.reference == f"oci://{host}/charts/{CHART['name']}:{CHART['version']}"
    assert chart_plain.digest.startswith("sha256:")


def test_helm_template_from_oci_renders_what_the_local_chart_renders(
    chart_plain: ChartPush, tmp_path: Path
) -> None:
    remote, version = chart_plain.reference.rsplit(":", 1)
    pulled = helm(
        "template", "kthybrid", remote, "--version", version, "--plain-http", home=tmp_path
    )
    local = helm("template", "kthybrid", str(CHART_DIR), home=tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == local.stdout


@pytest.mark.docker
def test_helm_install_dry_run_from_oci_deploys_the_pushed_image_by_digest(
    chart_plain: ChartPush, pushed: Pushed, tmp_path: Path
) -> None:
    values = record_push(pushed.first, "sm120", tmp_path / "pins")[1]
    remote, version = chart_plain.reference.rsplit(":", 1)
    result = helm(
        "install", "kthybrid", remote, "--version", version, "--plain-http",
        "--dry-run=client", "--namespace", "serving", "--values", str(values),
        home=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = result.stdout.split("\nMANIFEST:", 1)[1].split("\nNOTES:", 1)[0]
    manifests = [d for d in yaml.safe_load_all(text) if d]
    images = {
        c["image"]
        for d in manifests
        if d["kind"] in ("Deployment", "StatefulSet", "LeaderWorkerSet")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"{pushed.first.repository}:{pushed.first.tag}@{pushed.first.digest}"}
