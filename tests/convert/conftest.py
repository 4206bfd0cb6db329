"""Fixtures of the converter tests: tiny MXFP4 checkpoints (real data) in temporary directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.mxfp4_checkpoint import Spec, write_checkpoint


@pytest.fixture(scope="session")
def tiny_v4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 MoE layers + 1 MTP layer x 16 experts, hidden 256, intermediate 256, V4 key names."""
    return write_checkpoint(tmp_path_factory.mktemp("models") / "tiny-v4", Spec(style="v4"))


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same experts (same seed) under Hugging Face key names."""
    return write_checkpoint(tmp_path_factory.mktemp("models") / "tiny-hf", Spec(style="hf"))
