"""Pushing through the Docker SDK to a real registry: the digest, its stability, pull by digest."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import docker
import pytest
import requests
import yaml
from registry_helpers import Pushed

from builder.push import REGISTRY_PATTERN, PushError, push_image, record_push
from tests.support.compose_project import ComposeProject

CHART_SCHEMA = Path(__file__).resolve().parents[2] / "helm" / "kthybrid" / "values.schema.json"
MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.mark.docker
def test_the_digest_is_the_one_the_registry_serves(pushed: Pushed) -> None:
    name = pushed.first.repository.split("/", 1)[1]
    answer = requests.get(
        f"http://{pushed.registry.host}/v2/{name}/manifests/{pushed.first.tag}",
        headers={"Accept": MANIFEST_ACCEPT},
        timeout=30,
    )
    assert answer.status_code == 200
    assert "sha256:" + hashlib.sha256(answer.content).hexdigest() == pushed.first.digest
    assert answer.headers["Docker-Content-Digest"] == pushed.first.digest


@pytest.mark.docker
def test_a_second_push_of_the_same_image_gives_the_same_digest(pushed: Pushed) -> None:
    assert pushed.second.digest == pushed.first.digest


@pytest.mark.docker
def test_a_second_push_sends_no_layer(pushed: Pushed) -> None:
    assert pushed.first.layers_pushed > 0
    assert pushed.second.layers_pushed == 0
    assert pushed.second.layers_present == pushed.first.layers_pushed


@pytest.mark.docker
def test_pull_by_digest_gives_the_local_image(
    docker_client: docker.DockerClient, pushed: Pushed, small_image: str
) -> None:
    reference = pushed.first.reference
    pulled = docker_client.images.pull(reference)
    try:
        assert pulled.id == docker_client.images.get(small_image).id
        assert reference in pulled.attrs["RepoDigests"]
    finally:
        docker_client.images.remove(reference, noprune=True)


@pytest.mark.docker
def test_the_push_leaves_the_local_image_names_as_they_were(
    docker_client: docker.DockerClient, pushed: Pushed, small_image: str
) -> None:
    tags = docker_client.images.get(small_image).tags
    assert not [t for t in tags if t.startswith(pushed.registry.host)], tags


@pytest.mark.docker
def test_the_record_holds_the_digest_and_the_pins(pushed: Pushed, tmp_path: Path) -> None:
    paths = record_push(pushed.first, "sm120", tmp_path)
    assert sorted(p.name for p in paths) == ["digest.env", "push.json", "values-digest.yaml"]
    assert json.loads((tmp_path / "push.json").read_text())["digest"] == pushed.first.digest
    values = yaml.safe_load((tmp_path / "values-digest.yaml").read_text())
    assert values["image"]["digest"] == pushed.first.digest
    assert (
        f"KTHYBRID_IMAGE_DIGEST=@{pushed.first.digest}\n" in (tmp_path / "digest.env").read_text()
    )


@pytest.mark.docker
def test_pushing_an_image_that_is_not_built_names_make_image(
    docker_client: docker.DockerClient, plain_registry: object
) -> None:
    with pytest.raises(PushError, match="is not built: run `make image`"):
        push_image(docker_client, "kthybrid-registry-test-absent:none", "127.0.0.1:9", emit=print)


@pytest.mark.docker
def test_a_registry_that_does_not_answer_fails_with_one_message(
    docker_client: docker.DockerClient, small_image: str
) -> None:
    with pytest.raises(PushError, match="refused the push"):
        push_image(docker_client, small_image, "127.0.0.1:9", emit=lambda _: None)
    assert not [
        t for t in docker_client.images.get(small_image).tags if t.startswith("127.0.0.1:9/")
    ]


@pytest.mark.parametrize(
    "registry",
    ["127.0.0.1:5000", "registry.example.com", "registry.example.com:443/team/ml", "localhost"],
)
def test_every_registry_push_accepts_gives_a_repository_the_chart_accepts(registry: str) -> None:
    pattern = json.loads(CHART_SCHEMA.read_text())["properties"]["image"]["properties"]
    chart = re.compile(pattern["repository"]["pattern"])
    assert REGISTRY_PATTERN.match(registry)
    assert chart.match(f"{registry}/kthybrid")


@pytest.mark.parametrize(
    "registry",
    [
        "https://registry.example.com",
        "Registry.example.com/Team",
        "a b",
        "host:port",
        "host/../x",
        "host;rm -rf /",
        "host/UPPER",
        "-bad.example.com",
    ],
)
def test_a_registry_push_refuses_is_one_the_chart_refuses_too(registry: str) -> None:
    pattern = json.loads(CHART_SCHEMA.read_text())["properties"]["image"]["properties"]
    chart = re.compile(pattern["repository"]["pattern"])
    assert not REGISTRY_PATTERN.match(registry)
    assert not chart.match(f"{registry}/kthybrid")


@pytest.mark.docker
def test_compose_with_the_env_pin_runs_the_image_by_digest(pushed: Pushed, tmp_path: Path) -> None:
    pin = record_push(pushed.first, "sm120", tmp_path / "pins")[2]
    settings = dict(line.split("=", 1) for line in pin.read_text().splitlines() if "=" in line)
    services = ComposeProject(tmp_path).set(**settings).config()["services"]
    expected = f"{pushed.first.repository}:sm120@{pushed.first.digest}"
    assert {s["image"] for s in services.values()} == {expected}
