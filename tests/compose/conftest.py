"""Fixtures for compose tests: projects that always come down, a model dir, hugepages."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.compose_project import API_KEY, OTHER_MOE, ComposeProject

DEFAULT_IMAGE = "kthybrid:sm120"
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")


def pytest_addoption(parser: pytest.Parser) -> None:
    # tests/conftest.py may already define --image for every test group; reuse it then.
    with contextlib.suppress(ValueError):
        parser.addoption("--image", action="store", default=None, help="kthybrid image to test")


@pytest.fixture(scope="session")
def compose_image(request: pytest.FixtureRequest) -> str:
    """The image the compose tests start; it must exist in the local engine."""
    name = str(request.config.getoption("--image") or DEFAULT_IMAGE)
    found = subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False)
    if found.returncode != 0:
        pytest.fail(
            f"image {name} not found: build it with `make image ARCH=sm120` or pass --image",
            pytrace=False,
        )
    return name


@pytest.fixture(scope="session", autouse=True)
def docker_compose_v2() -> None:
    result = subprocess.run(
        ["docker", "compose", "version", "--short"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not result.stdout.strip().lstrip("v").startswith("2."):
        pytest.fail(
            "docker compose v2 is missing: run tools/install-compose.sh "
            "(and tools/docker-engine.sh for the engine)",
            pytrace=False,
        )


@pytest.fixture
def compose(tmp_path: Path) -> Iterator[Callable[..., ComposeProject]]:
    """Factory of Compose projects; each is taken down (containers and volumes) afterwards."""
    projects: list[ComposeProject] = []

    # The API key secret: a file UID 10000 can read, as the README says to make it.
    api_key = tmp_path / "api-key"
    api_key.write_text(API_KEY)
    api_key.chmod(0o644)

    def make(**settings: str) -> ComposeProject:
        project = ComposeProject(env_dir=tmp_path)
        project.set(**{"MODELS_DIR": str(tmp_path), "API_KEY_FILE": str(api_key), **settings})
        projects.append(project)
        return project

    yield make
    for project in projects:
        project.down()


@pytest.fixture
def models_dir() -> Iterator[Path]:
    """A host dir with a small DeepSeek-V4 shaped checkpoint (real headers, sparse data).

    Not pytest's tmp_path: that is mode 0700 under root, and the services run as UID 10000.
    """
    from tests.support.launcher_fixtures import ModelSpec, build_model

    root = Path(tempfile.mkdtemp(prefix="kthybrid-compose-models-"))
    root.chmod(0o755)
    spec = ModelSpec(layers=4, experts=16, hidden=1024, inter=512, shards=2)
    build_model(root / "DeepSeek-V4-Flash", spec)
    # A MoE without DeepSeek-V4's run-time needs (nvcc): it plans in an image built offline.
    other = ModelSpec(layers=4, experts=16, hidden=1024, inter=512, shards=2,
                      model_type="qwen3_moe", architecture="Qwen3MoeForCausalLM")  # fmt: skip
    build_model(root / OTHER_MOE, other)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hugepages_reserved() -> Iterator[int]:
    """Up to 64 pages of 2 MiB reserved on the host (as many as the kernel gave); restored after."""
    try:
        old = NR_HUGEPAGES.read_text().strip()
        # After an image build the page cache fills memory and leaves few free 2 MiB blocks:
        # drop clean caches and compact memory first, as an operator would before reserving.
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        Path("/proc/sys/vm/compact_memory").write_text("1\n")
        NR_HUGEPAGES.write_text("64\n")
    except OSError as error:
        pytest.skip(f"cannot reserve hugepages here ({error.strerror}); needs root")
    try:
        total = int(NR_HUGEPAGES.read_text())
        if total == 0:
            pytest.skip("the kernel reserved no hugepages (memory too fragmented)")
        yield total
    finally:
        NR_HUGEPAGES.write_text(f"{old}\n")
