"""The router entry's refusals: a key on argv, no key file, a bad key file (exit 2, one line)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from kthybrid_serve import apikey

from tests.support.script_module import load_script

ENTRY = Path(__file__).resolve().parents[2] / "docker" / "router" / "kthybrid_router.py"
kthybrid_router = load_script("kthybrid_router", ENTRY)


def refusal(argv: list[str], environ: dict[str, str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("KTHYBRID_API_KEY_FILE",):
            patch.delenv(name, raising=False)
        for name, value in environ.items():
            patch.setenv(name, value)
        assert kthybrid_router.main(argv) == kthybrid_router.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kthybrid_router: error: ")
    return err


@pytest.mark.parametrize(
    "argv",
    [["--api-key", "k"], ["--api-key=k"], ["--control-plane-api-keys", "a:b:admin:c"]],
)
def test_an_option_that_carries_a_secret_is_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert "secret on the command line" in refusal(argv, {}, capsys)


def test_no_key_file_variable_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert "KTHYBRID_API_KEY_FILE is not set" in refusal([], {}, capsys)


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "does not exist"), ("short\n", "16 to 4096"), ("two words-0123456789\n", "16 to"),
     ("\xe9" * 20, "not ASCII")],
)  # fmt: skip
def test_a_bad_key_file_is_refused(
    tmp_path: Path, content: str | None, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_bytes(content.encode("latin-1"))
    assert says in refusal([], {"KTHYBRID_API_KEY_FILE": str(path)}, capsys)


def test_a_directory_as_key_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "not a regular file" in refusal([], {"KTHYBRID_API_KEY_FILE": str(tmp_path)}, capsys)


@pytest.mark.parametrize(
    "key",
    ["a" * 15, "a" * 16, "a" * 4095, "a" * 4096, "with space-0123456789", "tab\t0123456789ab"],
)
def test_the_router_accepts_the_keys_the_servers_accept(tmp_path: Path, key: str) -> None:
    path = tmp_path / "key"
    path.write_text(key + "\n", encoding="ascii")
    try:
        apikey.read_api_key(str(path))
        servers = True
    except Exception:
        servers = False
    try:
        kthybrid_router.read_key(str(path))
        router = True
    except kthybrid_router.RouterEntryError:
        router = False
    assert router == servers


def test_the_image_refuses_a_key_on_argv_with_one_line(router_image: str) -> None:
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", router_image, "--api-key", "k"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert re.fullmatch(
        r"kthybrid_router: error: --api-key would put a secret .*\n", result.stderr
    ), result.stderr
