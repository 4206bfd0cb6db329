"""Run `docker compose` on compose/ with a settings file built from .env.example plus overrides."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.matrix import load_targets

API_KEY = "kthybrid-test-key-0123456789abcdef"
# A MoE without DeepSeek-V4's run-time needs (nvcc): it plans in an image built offline.
OTHER_MOE = "Qwen3-MoE-small"

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
# The targets of the builder's data file, whose render writes compose/arch/<ARCH>.env.
ARCHES = tuple(load_targets())
PROFILES = ("serve", "mtp", "download", "convert", "chat", "bench-serve")
LAYERS = ("compose.hugepages.yaml", "compose.gpu-ids.yaml", "compose.no-gpu.yaml")
# On these CI machines the kernel refuses a locked-memory limit above 8 MiB.
CI_MEMLOCK = "8388608"

_ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def env_example() -> dict[str, str]:
    """The variables .env.example sets, in file order."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def _clean_environ() -> dict[str, str]:
    # Shell variables beat the env file in Compose: keep the caller's out.
    names = set(env_example())
    return {
        k: v
        for k, v in os.environ.items()
        if k not in names and not k.startswith(("COMPOSE_", "KTHYBRID_"))
    }


@dataclass
class ComposeProject:
    """One Compose project with a unique name; `down()` removes its containers and volumes."""

    env_dir: Path
    settings: dict[str, str] = field(default_factory=env_example)
    name: str = field(default_factory=lambda: f"kthybrid-test-{uuid.uuid4().hex[:10]}")
    compose_dir: Path = COMPOSE_DIR

    def set(self, **values: str) -> ComposeProject:
        self.settings.update(values)
        return self

    @property
    def env_file(self) -> Path:
        path = self.env_dir / f"{self.name}.env"
        settings = {**self.settings, "COMPOSE_PROJECT_NAME": self.name}
        path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        return path

    def run(
        self, args: Sequence[str], *, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        argv = ["docker", "compose", "--env-file", str(self.env_file), "-p", self.name, *args]
        result = subprocess.run(
            argv,
            cwd=self.compose_dir,
            env=_clean_environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def config(self, profiles: Sequence[str] = ()) -> dict[str, Any]:
        flags = [arg for p in profiles for arg in ("--profile", p)]
        loaded: dict[str, Any] = json.loads(self.run([*flags, "config", "--format", "json"]).stdout)
        return loaded

    def down(self) -> None:
        self.run(
            ["--profile", "*", "down", "--volumes", "--remove-orphans", "--timeout", "5"],
            check=False,
        )


def labels_filter(project: ComposeProject) -> Mapping[str, str]:
    return {"label": f"com.docker.compose.project={project.name}"}
