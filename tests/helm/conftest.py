"""Fixtures for the kthybrid chart tests: the real helm binary, the ci/ scenarios rendered once."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helm_chart import (
    HELM,
    INSTALL_SCRIPT,
    SCENARIOS,
    Rendered,
    run_helm_template,
    scenario_file,
)


@pytest.fixture(scope="session")
def helm() -> Path:
    """The pinned helm binary, installed by tools/install-helm.sh when missing (never skipped)."""
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not HELM.exists():
        pytest.fail(
            f"helm is needed and tools/install-helm.sh failed (exit {result.returncode}):\n"
            f"{result.stderr}\nRun tools/install-helm.sh by hand and retry.",
            pytrace=False,
        )
    return HELM


@pytest.fixture(scope="session")
def render(helm: Path) -> Callable[..., Rendered]:
    """render(*values_files, set_values=(...), extra=(...)) -> Rendered; raises RenderError."""

    def _render(
        *values_files: Path, set_values: tuple[str, ...] = (), extra: tuple[str, ...] = ()
    ) -> Rendered:
        return run_helm_template(helm, *values_files, set_values=set_values, extra=extra)

    return _render


@pytest.fixture(scope="session")
def scenario_renders(helm: Path) -> dict[str, Rendered]:
    """Every ci/ scenario rendered once per session."""
    return {s: run_helm_template(helm, scenario_file(s)) for s in SCENARIOS}


@pytest.fixture(scope="session")
def default_render(scenario_renders: dict[str, Rendered]) -> Rendered:
    return scenario_renders["defaults"]
