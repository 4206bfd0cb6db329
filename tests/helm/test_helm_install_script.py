"""tools/install-helm.sh is shellcheck-clean, idempotent, and installs helm 4."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helm_chart import INSTALL_SCRIPT


def test_install_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    result = subprocess.run(
        [shellcheck, "-x", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_second_run_installs_nothing(helm: Path) -> None:
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=True
    )
    assert "already in" in result.stdout


def test_installed_helm_is_version_4(helm: Path) -> None:
    version = subprocess.run(
        [str(helm), "version", "--template", "{{.Version}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert version.startswith("v4."), version
