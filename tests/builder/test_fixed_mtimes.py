"""docker/scripts/fixed-mtimes.sh in a container of the base image, as a RUN step uses it."""

from __future__ import annotations

import pytest

from builder.matrix import REPO_ROOT, load_versions

docker = pytest.importorskip("docker")

SCRIPT = "/scripts/fixed-mtimes.sh"
STEP = (
    f"mkdir -p /opt/before && touch -d @1000 /opt/before/old && {SCRIPT} start && "
    "mkdir -p /opt/new/deep && echo x > /opt/new/deep/file && ln -s file /opt/new/deep/link && "
    "touch -d @5 /opt/new/extracted && touch /tmp/scratch && rm /tmp/scratch && "
    f"echo y >> /opt/before/changed; SOURCE_DATE_EPOCH=1700000000 {SCRIPT} apply && "
    "stat -c '%n %Y' /opt/new /opt/new/deep /opt/new/deep/file /opt/new/extracted /tmp "
    "/opt/before/changed /opt/before/old /opt/new/deep/link && ls /dev/shm"
)


@pytest.mark.docker
def test_everything_the_step_changed_gets_the_epoch_and_nothing_else(
    docker_client: docker.DockerClient,
) -> None:
    client = docker_client
    output = client.containers.run(
        load_versions().base_image,
        ["bash", "-c", STEP],
        volumes={str(REPO_ROOT / "docker" / "scripts"): {"bind": "/scripts", "mode": "ro"}},
        remove=True,
        network_mode="none",
        labels={"io.kthybrid.test": "builder"},
    ).decode()
    times = dict(line.rsplit(" ", 1) for line in output.splitlines() if " " in line)
    for path in (
        "/opt/new",
        "/opt/new/deep",
        "/opt/new/deep/file",
        "/opt/new/deep/link",
        "/opt/new/extracted",
        "/tmp",
        "/opt/before/changed",
    ):
        assert times[path] == "1700000000", (path, output)
    # Made before `start`: not this step's, left alone.
    assert times["/opt/before/old"] == "1000"
    # The mark lived outside the layer and is gone.
    assert "kthybrid-step-start" not in output


@pytest.mark.docker
def test_apply_without_the_epoch_stops_the_step(docker_client: docker.DockerClient) -> None:
    client = docker_client
    with pytest.raises(docker.errors.ContainerError) as error:
        client.containers.run(
            load_versions().base_image,
            ["bash", "-c", f"{SCRIPT} start && {SCRIPT} apply"],
            volumes={str(REPO_ROOT / "docker" / "scripts"): {"bind": "/scripts", "mode": "ro"}},
            remove=True,
            network_mode="none",
            labels={"io.kthybrid.test": "builder"},
        )
    assert b"SOURCE_DATE_EPOCH is not set" in error.value.stderr
