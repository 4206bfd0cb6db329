"""The SBOM as an OCI artifact that refers to the image digest, fetched back by that digest.

Distribution 2.8 has no referrers API (/v2/<name>/referrers/<digest> answers 404), so the
referrer is listed by the OCI 1.1 fallback: an image index under the tag sha256-<hex>.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from registry_helpers import Pushed

from builder.oci import (
    OCI_INDEX,
    SBOM_ARTIFACT_TYPE,
    OciRegistry,
    attach_sbom,
    fallback_tag,
    fetch_sbom,
    split_repository,
)
from builder.push import PushError
from builder.registry_cli import image_sbom_file
from builder.sbom import extract_sbom


@pytest.fixture(scope="module")
def attached(pushed: Pushed, image_sbom: bytes) -> tuple[OciRegistry, str, str, bool]:
    host, name = split_repository(pushed.first.repository)
    registry = OciRegistry(host)
    artifact, fallback = attach_sbom(registry, name, pushed.first.digest, image_sbom)
    return registry, name, artifact, fallback


@pytest.mark.docker
@pytest.mark.image
def test_the_sbom_fetched_by_image_digest_is_the_image_s_file(
    pushed: Pushed, image_sbom: bytes, attached: tuple[OciRegistry, str, str, bool]
) -> None:
    registry, name, artifact, _ = attached
    data, found = fetch_sbom(registry, name, pushed.first.digest)
    assert data == image_sbom
    assert found == artifact
    assert json.loads(data)["bomFormat"] == "CycloneDX"


@pytest.mark.docker
@pytest.mark.image
def test_the_artifact_s_subject_is_the_image_digest(
    pushed: Pushed, attached: tuple[OciRegistry, str, str, bool]
) -> None:
    registry, name, artifact, _ = attached
    found = registry.manifest(name, artifact)
    assert found is not None
    manifest = json.loads(found[0])
    assert manifest["subject"]["digest"] == pushed.first.digest
    assert manifest["artifactType"] == SBOM_ARTIFACT_TYPE


@pytest.mark.docker
@pytest.mark.image
def test_distribution_2_8_has_no_referrers_api_so_the_fallback_tag_lists_it(
    pushed: Pushed, attached: tuple[OciRegistry, str, str, bool]
) -> None:
    registry, name, artifact, fallback = attached
    api = requests.get(
        f"http://{registry.host}/v2/{name}/referrers/{pushed.first.digest}", timeout=30
    )
    assert api.status_code == 404
    assert fallback
    index = requests.get(
        f"http://{registry.host}/v2/{name}/manifests/{fallback_tag(pushed.first.digest)}",
        headers={"Accept": OCI_INDEX},
        timeout=30,
    )
    assert index.status_code == 200
    assert [m["digest"] for m in index.json()["manifests"]] == [artifact]


@pytest.mark.docker
@pytest.mark.image
def test_attaching_the_same_sbom_again_lists_it_once(
    pushed: Pushed, image_sbom: bytes, attached: tuple[OciRegistry, str, str, bool]
) -> None:
    registry, name, artifact, _ = attached
    again, _ = attach_sbom(registry, name, pushed.first.digest, image_sbom)
    assert again == artifact
    assert [m["digest"] for m in registry.referrers(name, pushed.first.digest)] == [artifact]


@pytest.mark.docker
def test_an_image_digest_without_an_sbom_says_so(pushed: Pushed) -> None:
    host, name = split_repository(pushed.first.repository)
    absent = "sha256:" + "0" * 64
    with pytest.raises(PushError, match="has no SBOM attached"):
        fetch_sbom(OciRegistry(host), name, absent)


@pytest.mark.docker
def test_attaching_to_a_digest_the_registry_does_not_have_is_refused(pushed: Pushed) -> None:
    host, name = split_repository(pushed.first.repository)
    with pytest.raises(PushError, match="has no image sha256:1111"):
        attach_sbom(OciRegistry(host), name, "sha256:" + "1" * 64, b"{}")


@pytest.mark.docker
def test_an_sbom_that_is_not_json_is_not_attached(pushed: Pushed) -> None:
    host, name = split_repository(pushed.first.repository)
    with pytest.raises(PushError, match="is not JSON"):
        attach_sbom(OciRegistry(host), name, pushed.first.digest, b"not json")


@pytest.mark.docker
@pytest.mark.image
def test_the_file_make_sbom_writes_is_taken_as_the_image_s_sbom(
    image_name: str, image_sbom: bytes, tmp_path: Path
) -> None:
    written = tmp_path / "sbom.cdx.json"
    extract_sbom(image_name, written)
    assert json.loads(image_sbom_file(image_name, written)) == json.loads(image_sbom)


@pytest.mark.docker
@pytest.mark.image
def test_a_stale_sbom_file_is_refused_before_anything_is_pushed(
    image_name: str, image_sbom: bytes, tmp_path: Path
) -> None:
    stale = json.loads(image_sbom)
    stale["components"] = stale["components"][1:]
    written = tmp_path / "sbom.cdx.json"
    written.write_text(json.dumps(stale))
    with pytest.raises(PushError, match=r"is not the SBOM in .* run `make sbom` again"):
        image_sbom_file(image_name, written)


def test_a_missing_sbom_file_names_make_sbom(tmp_path: Path) -> None:
    with pytest.raises(PushError, match="run `make sbom` first"):
        image_sbom_file("kthybrid:sm120", tmp_path / "absent.json")
