"""LeaderWorkerSet mode: leader and workers started with sglang's multi-node flags."""

from __future__ import annotations

from typing import Any

import pytest
from helm_chart import Rendered, RenderError, container, env_of


@pytest.fixture(scope="module")
def lws(scenario_renders: dict[str, Rendered]) -> dict[str, Any]:
    rendered = scenario_renders["leaderworkerset"]
    assert not rendered.of_kind("Deployment"), "multi-node renders a LeaderWorkerSet instead"
    return rendered.one("LeaderWorkerSet")


@pytest.mark.parametrize("role", ["leaderTemplate", "workerTemplate"])
def test_every_pod_gets_nnodes_rank_and_leader_address(lws: dict[str, Any], role: str) -> None:
    template = lws["spec"]["leaderWorkerTemplate"][role]
    env = env_of(container(template["spec"], "server"))
    assert env["KTHYBRID_NNODES"] == "2"
    assert env["KTHYBRID_NODE_RANK"] == {
        "fieldRef": {"fieldPath": "metadata.labels['leaderworkerset.sigs.k8s.io/worker-index']"}
    }
    assert env["KTHYBRID_DIST_INIT_ADDR"] == "$(LWS_LEADER_ADDRESS):20000"
    # The launcher derives it: GPUs per pod times KTHYBRID_NNODES.
    assert "KTHYBRID_TP_SIZE" not in env


def test_group_size_and_restart_policy(lws: dict[str, Any]) -> None:
    lwt = lws["spec"]["leaderWorkerTemplate"]
    assert lwt["size"] == 2 and lwt["restartPolicy"] == "RecreateGroupOnPodRestart"


def test_lws_name_differs_from_the_service(
    lws: dict[str, Any], scenario_renders: dict[str, Rendered]
) -> None:
    service = scenario_renders["leaderworkerset"].one("Service")
    # The LWS controller creates a headless Service named after the LeaderWorkerSet.
    assert lws["metadata"]["name"] != service["metadata"]["name"]


def test_service_reaches_only_the_leaders(
    lws: dict[str, Any], scenario_renders: dict[str, Rendered]
) -> None:
    selector = scenario_renders["leaderworkerset"].one("Service")["spec"]["selector"]
    lwt = lws["spec"]["leaderWorkerTemplate"]
    leader_labels = lwt["leaderTemplate"]["metadata"]["labels"]
    worker_labels = lwt["workerTemplate"]["metadata"]["labels"]
    assert selector.items() <= leader_labels.items()
    assert not selector.items() <= worker_labels.items()


def test_only_the_leader_exposes_the_dist_init_port(lws: dict[str, Any]) -> None:
    lwt = lws["spec"]["leaderWorkerTemplate"]
    leader_ports = {p["name"] for p in container(lwt["leaderTemplate"]["spec"], "server")["ports"]}
    worker_ports = {p["name"] for p in container(lwt["workerTemplate"]["spec"], "server")["ports"]}
    assert leader_ports == {"http", "dist-init"} and worker_ports == {"http"}


def test_network_policy_lets_the_group_talk(scenario_renders: dict[str, Rendered]) -> None:
    policy = scenario_renders["leaderworkerset"].one("NetworkPolicy")
    peers = [p for rule in policy["spec"]["ingress"] for p in rule.get("from", [])]
    assert any("podSelector" in p for p in peers)


MULTI_NODE = ("multiNode.enabled=true", "models.source=hostPath", "cache.source=emptyDir")


@pytest.mark.parametrize(
    ("dist_init_port", "server_port"),
    [(30000, 30000), (29995, 30000), (29997, 30000), (20000, 20005)],
)
def test_dist_init_ports_that_clash_with_the_server_port_fail(
    render: Any, dist_init_port: int, server_port: int
) -> None:
    with pytest.raises(RenderError) as caught:
        render(
            set_values=(
                *MULTI_NODE,
                f"multiNode.distInitPort={dist_init_port}",
                f"server.port={server_port}",
            )
        )
    assert (
        f"multiNode.distInitPort={dist_init_port} clashes with server.port={server_port}: "
        f"sglang uses ports {dist_init_port}-{dist_init_port + 5} on the leader"
    ) in str(caught.value)


def test_dist_init_ports_just_clear_of_the_server_port_render(render: Any) -> None:
    rendered = render(set_values=(*MULTI_NODE, "multiNode.distInitPort=29994"))
    leader = rendered.one("LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]["leaderTemplate"]
    ports = {p["name"]: p["containerPort"] for p in container(leader["spec"], "server")["ports"]}
    assert ports == {"http": 30000, "dist-init": 29994}


def test_the_dist_init_port_is_only_checked_in_multi_node_mode(render: Any) -> None:
    assert render(set_values=("multiNode.distInitPort=30000",)).one("Deployment")
