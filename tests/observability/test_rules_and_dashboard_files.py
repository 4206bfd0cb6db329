"""The shipped alert rules pass promtool (syntax and unit tests), the dashboard is what
builder/dashboard.py writes, and compose's copies are the chart's files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from builder.dashboard import dashboard_text

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "helm/kthybrid/files/monitoring"
COMPOSE_MONITORING = ROOT / "compose/monitoring"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: run tools/install-prometheus.sh (make tools does)")
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False,
                          cwd=MONITORING)  # fmt: skip


def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", "kthybrid.rules.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = _promtool("test", "rules", "kthybrid.rules.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_dashboard_is_what_builder_dashboard_writes() -> None:
    assert (MONITORING / "dashboard.json").read_text() == dashboard_text(), (
        "run `python -m builder.dashboard`"
    )


@pytest.mark.parametrize("name", ["kthybrid.rules.yaml", "dashboard.json"])
def test_compose_ships_the_charts_monitoring_files(name: str) -> None:
    assert (COMPOSE_MONITORING / name).read_bytes() == (MONITORING / name).read_bytes(), (
        f"copy helm/kthybrid/files/monitoring/{name} to compose/monitoring/"
    )
