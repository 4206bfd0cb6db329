"""`docker compose --profile convert up` converts a checkpoint with the image's own converter.

A tiny V4-format checkpoint with real MXFP4 data (tests/support/mxfp4_checkpoint.py) is
converted on this machine, without a GPU (the no-GPU layer drops the reservation; the
experts are then dequantized on the CPU) and, here, without AMX (kt-kernel's AVX-512
quantizer writes the files an AMX CPU writes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.compose_project import CI_MEMLOCK, ComposeProject
from tests.support.host_cpu import needs_quantizer
from tests.support.mxfp4_checkpoint import Spec, write_checkpoint

Compose = Callable[..., ComposeProject]


@pytest.fixture
def tiny_models() -> Iterator[Path]:
    """MODELS_DIR with `tiny/`; writable by the image's user, who writes `tiny-AMXINT4/`."""
    root = Path(tempfile.mkdtemp(prefix="kthybrid-compose-convert-"))
    root.chmod(0o777)
    write_checkpoint(root / "tiny", Spec())
    for path in (root / "tiny").rglob("*"):
        path.chmod(0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def image_repo(compose_image: str) -> Iterator[dict[str, str]]:
    """KTHYBRID_IMAGE_REPO and ARCH naming the image under test (via a throwaway tag)."""
    arch = compose_image.rsplit(":", 1)[-1].rsplit("-", 1)[-1]
    repo = "kthybrid-compose-convert-test"
    subprocess.run(["docker", "tag", compose_image, f"{repo}:{arch}"], check=True)
    yield {"KTHYBRID_IMAGE_REPO": repo, "ARCH": arch}
    subprocess.run(["docker", "rmi", f"{repo}:{arch}"], capture_output=True, check=False)


@needs_quantizer
def test_the_convert_profile_converts_the_checkpoint(
    compose: Compose, image_repo: dict[str, str], tiny_models: Path
) -> None:
    project = compose(
        **image_repo,
        COMPOSE_FILE="compose.yaml:compose.no-gpu.yaml",
        MODELS_DIR=str(tiny_models),
        MODEL_NAME="tiny",
        MEMLOCK=CI_MEMLOCK,
        SHM_SIZE="1g",
    )
    result = project.run(
        ["--profile", "convert", "up", "--exit-code-from", "convert", "convert"], timeout=600
    )
    assert "converting 4 of 4 MoE layers of /models/tiny to AMXINT4" in result.stdout
    output = tiny_models / "tiny-AMXINT4"
    assert sorted(p.name for p in output.glob("_layer_*")) == [f"_layer_{n}" for n in range(4)]
    manifest = json.loads((output / "kthybrid-convert.json").read_text())
    nodes = len(list(Path("/sys/devices/system/node").glob("node[0-9]*"))) or 1
    assert manifest["pools"] == nodes and manifest["mtp_layers"] == [3]
