"""`helm lint --strict` is clean for the defaults and every ci/ scenario."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helm_chart import CHART_DIR, SCENARIOS, scenario_file


def _lint(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), "lint", "--strict", str(CHART_DIR), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_lint_strict_is_clean_with_the_defaults(helm: Path) -> None:
    result = _lint(helm)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict_is_clean_for_the_scenario(helm: Path, scenario: str) -> None:
    result = _lint(helm, "--values", str(scenario_file(scenario)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout
