"""Shared fixtures of the launcher tests: host trees and model dirs in temporary directories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kthybrid_serve.cli import main

from tests.support.launcher_fixtures import HostSpec, ModelSpec, Result, build_host, build_model


@pytest.fixture(scope="session")
def v4_flash(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DeepSeek-V4-Flash with its real dimensions: 43 layers x 256 MXFP4 experts, sparse."""
    return build_model(tmp_path_factory.mktemp("models") / "DeepSeek-V4-Flash", ModelSpec())


@pytest.fixture
def make_host(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def make(**fields: object) -> Path:
        return build_host(tmp_path / f"host{next(counter)}", HostSpec(**fields))  # type: ignore[arg-type]

    return make


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher reads KTHYBRID_* and image variables: start every test without them."""
    import os

    for name in list(os.environ):
        if name.startswith(("KTHYBRID_", "SGLANG_DSV4")) or name.endswith("_CUDA_ARCH_LIST"):
            monkeypatch.delenv(name)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    def run(*args: str) -> Result:
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse usage errors
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
