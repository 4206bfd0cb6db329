"""docker/scripts/make-sbom.py against a small environment, lock and dpkg database.

The image check (tests/image/test_sbom.py) runs the same script's output against the real
image; this one shows the rules on cases the image does not have (an unlocked package, a
wrong version, a missing one, the ways metadata states a license).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from builder.matrix import REPO_ROOT

SCRIPT = REPO_ROOT / "docker" / "scripts" / "make-sbom.py"
HASH_A = "a" * 64
HASH_B = "b" * 64
LOCK = f"""\
# a lock as uv writes it
alpha-pkg==1.0 \\
    --hash=sha256:{HASH_A} \\
    --hash=sha256:{HASH_B}
    # via -r versions.yaml.requirements
beta==2.0 \\
    --hash=sha256:{HASH_B}
"""
STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u10

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2025b-0+deb12u1
"""


def write_dist(site: Path, name: str, version: str, extra: str = "") -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\nSummary: {name} demo\n{extra}"
    )
    (info / "RECORD").write_text("")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    write_dist(site, "alpha-pkg", "1.0", "License-Expression: MIT OR Apache-2.0\n")
    write_dist(site, "beta", "2.0", "Classifier: License :: OSI Approved :: BSD License\n")
    write_dist(site, "kthybrid-serve", "0.1.0")
    (tmp_path / "stack.lock").write_text(LOCK)
    (tmp_path / "status").write_text(STATUS)
    (tmp_path / "os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    (tmp_path / "cuda").mkdir()
    (tmp_path / "cuda" / "NVCC-VERSION").write_text(
        "Cuda compilation tools, release 12.8, V12.8.93\nBuild cuda_12.8.r12.8\n"
    )
    return tmp_path


def make_sbom(tree: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, str(SCRIPT), "--site", str(tree / "site"),
            "--lock", str(tree / "stack.lock"), "--own", "kthybrid-serve", "--target", "sm120",
            "--compute-capability", "12.0", "--cuda", "12.8",
            "--image-version", "0.7.2-cu128-sm120",
            "--revision", "abc123", "--dpkg-status", str(tree / "status"),
            "--os-release", str(tree / "os-release"), "--cuda-home", str(tree / "cuda"),
            "--output", str(tree / "out" / "sbom.cdx.json"), *extra,
        ],
        capture_output=True, text=True, check=False,
        env={"SOURCE_DATE_EPOCH": "1700000000", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def document(tree: Path) -> dict[str, Any]:
    result = make_sbom(tree)
    assert result.returncode == 0, result.stderr
    text = (tree / "out" / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    data: dict[str, Any] = json.loads(text)
    return data


def test_the_document_is_valid_cyclonedx_1_6_with_the_image_as_its_subject(tree: Path) -> None:
    data = document(tree)
    assert data["specVersion"] == "1.6"
    subject = data["metadata"]["component"]
    assert subject["type"] == "container"
    assert subject["version"] == "0.7.2-cu128-sm120"
    properties = {p["name"]: p["value"] for p in subject["properties"]}
    assert properties["kthybrid:target"] == "sm120"
    assert properties["kthybrid:cuda"] == "12.8"
    assert properties["kthybrid:source-revision"] == "abc123"
    assert data["metadata"]["timestamp"].startswith("2023-11-14T22:13:20")
    assert [c["name"] for c in subject["components"]] == ["kthybrid-serve"]


def test_python_packages_carry_the_locks_hashes_licenses_and_purls(tree: Path) -> None:
    components = {c["name"]: c for c in document(tree)["components"]}
    alpha = components["alpha-pkg"]
    assert alpha["purl"] == "pkg:pypi/alpha-pkg@1.0"
    assert sorted(h["content"] for h in alpha["hashes"]) == [HASH_A, HASH_B]
    assert alpha["licenses"] == [{"expression": "MIT OR Apache-2.0"}]
    assert components["beta"]["licenses"][0]["license"]["name"] == "BSD License"


def test_debian_packages_are_the_installed_ones_with_deb_purls(tree: Path) -> None:
    purls = {c["purl"] for c in document(tree)["components"] if c["purl"].startswith("pkg:deb/")}
    assert purls == {
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64&distro=debian-12",
        "pkg:deb/debian/tzdata@2025b-0%2Bdeb12u1?arch=all&distro=debian-12",
    }


def test_nvcc_is_listed_when_the_toolchain_was_copied(tree: Path) -> None:
    nvcc = [c for c in document(tree)["components"] if c["name"] == "cuda-nvcc"]
    assert [c["version"] for c in nvcc] == ["12.8.93"]


def test_the_same_input_gives_the_same_bytes(tree: Path) -> None:
    document(tree)
    first = (tree / "out" / "sbom.cdx.json").read_bytes()
    document(tree)
    assert (tree / "out" / "sbom.cdx.json").read_bytes() == first


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda site: write_dist(site, "stowaway", "9.9"),
            "stowaway 9.9 is installed but in no lock",
        ),
        (
            lambda site: (site / "beta-2.0.dist-info" / "METADATA").write_text(
                "Metadata-Version: 2.1\nName: beta\nVersion: 2.1\n"
            ),
            "beta is installed at 2.1, locked at 2.0",
        ),
        (
            lambda site: shutil.rmtree(site / "beta-2.0.dist-info"),
            "beta is locked but not installed",
        ),
    ],
)
def test_an_environment_that_is_not_the_locked_set_is_refused(
    tree: Path, change: Any, message: str
) -> None:
    change(tree / "site")
    result = make_sbom(tree)
    assert result.returncode == 1
    assert message in result.stderr
    assert not (tree / "out" / "sbom.cdx.json").exists()
