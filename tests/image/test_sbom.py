"""The image's CycloneDX SBOM lists exactly the locked Python set and the installed Debian
packages, and names the image's target, CUDA version and source revision."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import docker.models.images
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from builder.lock import REPLACEMENTS_LOCK, STACK_LOCK, normalise, split_entries
from builder.matrix import REPO_ROOT, Target
from builder.sbom import SBOM_LABEL, SBOM_PATH, read_sbom


@pytest.fixture(scope="module")
def sbom(docker_client: docker.DockerClient, image_name: str) -> dict[str, Any]:
    return read_sbom(docker_client, image_name)


def _components(sbom: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [c for c in sbom["components"] if str(c.get("purl", "")).startswith(f"pkg:{kind}/")]


def _locked() -> dict[str, tuple[str, set[str]]]:
    locked = {}
    for path in (STACK_LOCK, REPLACEMENTS_LOCK):
        for name, text in split_entries(path.read_text()):
            version = text.split("==", 1)[1].split()[0]
            locked[normalise(name)] = (version, set(re.findall(r"sha256:([0-9a-f]{64})", text)))
    return locked


def test_a_label_names_the_sbom_path(image: docker.models.images.Image) -> None:
    assert image.labels[SBOM_LABEL] == SBOM_PATH


def test_the_sbom_is_valid_cyclonedx_1_6(sbom: dict[str, Any]) -> None:
    assert sbom["specVersion"] == "1.6"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(sbom)) is None


def test_python_packages_are_exactly_the_locked_set_at_the_locked_versions(
    sbom: dict[str, Any],
) -> None:
    listed = {normalise(c["name"]): c["version"] for c in _components(sbom, "pypi")}
    assert listed == {name: version for name, (version, _) in _locked().items()}


def test_each_python_package_carries_its_purl_and_the_hashes_its_lock_accepts(
    sbom: dict[str, Any],
) -> None:
    locked = _locked()
    for component in _components(sbom, "pypi"):
        name = normalise(component["name"])
        assert component["purl"] == f"pkg:pypi/{name}@{component['version']}"
        assert {h["content"] for h in component["hashes"]} == locked[name][1], name


def test_licenses_are_there_where_the_metadata_gives_one(sbom: dict[str, Any]) -> None:
    by_name = {c["name"]: c for c in _components(sbom, "pypi")}
    # torch states "BSD-3-Clause"; numpy and transformers state theirs too.
    for name in ("torch", "numpy", "transformers"):
        assert by_name[name].get("licenses"), name
    with_license = sum(1 for c in by_name.values() if c.get("licenses"))
    assert with_license >= 0.9 * len(by_name), f"{with_license} of {len(by_name)}"


def test_debian_packages_are_exactly_the_installed_ones(
    sbom: dict[str, Any], run_in_image: Any
) -> None:
    result = run_in_image(
        ["dpkg-query", "-W", "-f", "${Package} ${Version} ${Architecture} ${db:Status-Status}\\n"]
    )
    assert result.exit_code == 0, result.stderr
    installed = {
        tuple(line.split()[:3])
        for line in result.stdout.splitlines()
        if line.endswith(" installed")
    }
    listed = set()
    for component in _components(sbom, "deb"):
        purl = PackageURL.from_string(component["purl"])
        assert (purl.namespace, purl.name, purl.version) == (
            "debian",
            component["name"],
            component["version"],
        )
        assert isinstance(purl.qualifiers, dict)
        listed.add((purl.name, purl.version, purl.qualifiers["arch"]))
    assert listed == installed


def test_the_image_is_the_subject_with_its_target_cuda_and_revision(
    sbom: dict[str, Any], image: docker.models.images.Image, target: Target
) -> None:
    subject = sbom["metadata"]["component"]
    assert subject["type"] == "container"
    assert subject["version"] == image.labels["org.opencontainers.image.version"]
    properties = {p["name"]: p["value"] for p in subject["properties"]}
    assert properties["kthybrid:target"] == target.name
    assert properties["kthybrid:compute-capability"] == target.compute_capability
    assert properties["kthybrid:cuda"] == image.labels["io.kthybrid.cuda"]
    assert (
        properties["kthybrid:source-revision"] == image.labels["org.opencontainers.image.revision"]
    )
    assert [c["name"] for c in subject["components"]] == ["kthybrid-serve"]


def test_make_sbom_writes_the_images_sbom_beside_the_build(
    sbom: dict[str, Any], repository: str, target: Target, tmp_path: Path
) -> None:
    output = tmp_path / "sbom.cdx.json"
    result = subprocess.run(
        [sys.executable, "-m", "builder", "sbom", "--arch", target.name,
         "--repository", repository, "--output", str(output)],
        capture_output=True, text=True, cwd=REPO_ROOT, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(output.read_text()) == sbom
