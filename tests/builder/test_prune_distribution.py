"""docker/scripts/prune-distribution.py on a real installed distribution in a real venv."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from builder.lock import _uv_binary
from builder.matrix import REPO_ROOT

SCRIPT = REPO_ROOT / "docker" / "scripts" / "prune-distribution.py"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel (written with zipfile: the format is a zip with a dist-info) of a small project
    with kernels for two architectures, a header, and a second module."""
    files = {
        "kernels_demo/__init__.py": b"",
        "kernels_demo/cubins/gemmSm100a.cubin": b"\x7fELF" + b"a" * 4000,
        "kernels_demo/cubins/gemmSm103a.cubin": b"\x7fELF" + b"b" * 2000,
        "kernels_demo/cubins/meta.h": b"// header\n",
        "helper/__init__.py": b"VALUE = 1\n",
        "helper/cli.py": b"def main():\n    return 0\n",
        "kernels_demo-1.0.dist-info/entry_points.txt": b"[console_scripts]\n"
        b"demo-helper = helper.cli:main\ndemo-kernels = kernels_demo:main\n",
        "kernels_demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: kernels-demo\n"
        b"Version: 1.0\n",
        "kernels_demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    rows = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{name},sha256={digest},{len(data)}")
    rows.append("kernels_demo-1.0.dist-info/RECORD,,")
    path = tmp_path_factory.mktemp("wheel") / "kernels_demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("kernels_demo-1.0.dist-info/RECORD", "\n".join(rows) + "\n")
    return path


@pytest.fixture
def venv(tmp_path: Path, wheel: Path) -> Path:
    root = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    subprocess.run(
        [
            _uv_binary(),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(root / "bin" / "python"),
            "--no-index",
            "--no-deps",
            str(wheel),
        ],
        check=True,
    )
    return root


def prune(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def record(venv: Path) -> list[str]:
    site = next((venv / "lib").glob("python*/site-packages"))
    text = next(site.glob("kernels_demo-1.0.dist-info")).joinpath("RECORD").read_text()
    return [row[0] for row in csv.reader(io.StringIO(text)) if row]


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python*/site-packages"))


def test_matching_files_go_and_the_record_lists_exactly_what_stays(venv: Path) -> None:
    result = prune(venv, "kernels-demo", "kernels_demo/cubins/*Sm103a*.cubin")
    assert result.returncode == 0, result.stderr
    assert "removed 1 files" in result.stdout
    site = site_packages(venv)
    assert not (site / "kernels_demo/cubins/gemmSm103a.cubin").exists()
    assert (site / "kernels_demo/cubins/gemmSm100a.cubin").exists()
    listed = record(venv)
    assert "kernels_demo/cubins/gemmSm103a.cubin" not in listed
    # Every file the RECORD lists exists, and every file of the distribution is listed.
    on_disk = {
        p.relative_to(site).as_posix()
        for top in ("kernels_demo", "helper", "kernels_demo-1.0.dist-info")
        for p in (site / top).rglob("*")
        if p.is_file()
    }
    assert on_disk == {path for path in listed if not path.startswith("../")}


def test_a_star_crosses_folders_and_emptied_folders_go(venv: Path) -> None:
    result = prune(venv, "kernels-demo", "helper/*")
    assert result.returncode == 0, result.stderr
    assert not (site_packages(venv) / "helper").exists()
    assert not any(path.startswith("helper/") for path in record(venv))


def test_a_replaced_module_takes_its_console_scripts_and_entry_points_along(venv: Path) -> None:
    assert (venv / "bin" / "demo-helper").exists()
    result = prune(venv, "--module", "kernels-demo", "helper")
    assert result.returncode == 0, result.stderr
    assert not (venv / "bin" / "demo-helper").exists()
    assert (venv / "bin" / "demo-kernels").exists()
    info = site_packages(venv) / "kernels_demo-1.0.dist-info"
    entry_points = (info / "entry_points.txt").read_text()
    assert "demo-helper" not in entry_points
    assert "demo-kernels = kernels_demo:main" in entry_points
    # The RECORD lists every remaining file with its current hash, entry_points.txt included.
    rows = {row[0]: row for row in csv.reader(io.StringIO((info / "RECORD").read_text())) if row}
    assert not any(name.endswith("bin/demo-helper") for name in rows)
    data = (info / "entry_points.txt").read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    assert rows["kernels_demo-1.0.dist-info/entry_points.txt"][1:] == [
        f"sha256={digest}",
        str(len(data)),
    ]


def test_wrong_arguments_say_how_to_call_it(venv: Path) -> None:
    result = prune(venv, "--module", "kernels-demo")
    assert result.returncode == 1
    assert result.stderr.startswith("usage: prune-distribution.py")


def test_a_pattern_that_matches_nothing_fails_with_one_line(venv: Path) -> None:
    result = prune(venv, "kernels-demo", "kernels_demo/cubins/*Sm120a*.cubin")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "no file of kernels-demo 1.0 matches" in result.stderr
    assert "gemmSm100a.cubin" in " ".join(record(venv))


def test_an_absent_distribution_fails_with_one_line(venv: Path) -> None:
    result = prune(venv, "no-such-dist", "*")
    assert result.returncode == 1
    assert result.stderr.strip() == "prune-distribution: no-such-dist is not installed"
