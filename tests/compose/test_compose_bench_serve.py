"""The bench-serve profile against a stand-in server in the same project, with the API key."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import openai_standin
from tests.support.compose_project import ComposeProject

Compose = Callable[..., ComposeProject]
STANDIN_LAYER = Path(__file__).with_name("standin.compose.yaml")
SWEEP = {
    "KTHYBRID_BENCH_CONCURRENCY": "1,2",
    "KTHYBRID_BENCH_DURATION": "2",
    "KTHYBRID_BENCH_OUTPUT_TOKENS": "8",
    "KTHYBRID_BENCH_PROMPT_TOKENS": "16",
}


@pytest.fixture(scope="module")
def bench_image_settings(compose_image: str) -> Iterator[dict[str, str]]:
    """KTHYBRID_IMAGE_REPO and ARCH that name the image under test (via a throwaway tag)."""
    arch = compose_image.rsplit(":", 1)[-1].rsplit("-", 1)[-1]
    repo = "kthybrid-compose-bench-test"
    subprocess.run(["docker", "tag", compose_image, f"{repo}:{arch}"], check=True)
    yield {"KTHYBRID_IMAGE_REPO": repo, "ARCH": arch}
    subprocess.run(["docker", "rmi", f"{repo}:{arch}"], capture_output=True, check=False)


@pytest.fixture
def project(compose: Compose, bench_image_settings: dict[str, str]) -> ComposeProject:
    support = Path(openai_standin.__file__).parent
    project = compose(**bench_image_settings, **SWEEP, STANDIN_DIR=str(support),
                      COMPOSE_FILE=f"compose.yaml:{STANDIN_LAYER}")  # fmt: skip
    project.run(["--profile", "bench-serve", "up", "--detach", "standin"], timeout=120)
    for _ in range(100):
        logs = project.run(["--profile", "bench-serve", "logs", "standin"]).stdout
        if "listening" in logs:
            return project
        time.sleep(0.2)
    raise AssertionError(f"the stand-in did not start: {logs}")


def _bench(project: ComposeProject, *args: str) -> subprocess.CompletedProcess[str]:
    return project.run(["--profile", "bench-serve", "run", "--rm", "-T", "bench-serve", *args],
                       check=False, timeout=300)  # fmt: skip


def test_the_profile_measures_the_server_with_the_key_and_keeps_the_json(
    project: ComposeProject,
) -> None:
    result = _bench(project, "bench-serve", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    data: dict[str, Any] = json.loads(result.stdout)
    assert data["api_key"] is True and data["url"] == "http://kthybrid:30000/v1"
    assert [level["concurrency"] for level in data["levels"]] == [1, 2]
    assert all(level["requests"] > 0 and level["errors"] == 0 for level in data["levels"])
    kept = project.run(["--profile", "bench-serve", "run", "--rm", "-T", "--entrypoint", "cat",
                        "bench-serve", "/cache/bench/serving.json"])  # fmt: skip
    assert json.loads(kept.stdout)["levels"] == data["levels"]


def test_the_profiles_default_command_prints_the_table(project: ComposeProject) -> None:
    result = _bench(project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "conc  req  err  out tok/s" in result.stdout
    assert "wrote /cache/bench/serving.json" in result.stdout
