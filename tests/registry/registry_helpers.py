"""What the registry tests share besides fixtures: the push record and the CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from builder.push import PushResult
from tests.support.local_registry import LocalRegistry

REPO_ROOT = Path(__file__).resolve().parents[2]
USER = "kthybrid-ci"


@dataclass(frozen=True)
class Pushed:
    """One push of the small image and what came of it."""

    registry: LocalRegistry
    first: PushResult
    second: PushResult


def run_builder(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess[str]:
    """`python -m builder ARGS` as a user runs it; the environment has no registry credentials
    unless `env` brings them."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KTHYBRID_REGISTRY_")}
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
