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


def _group_policies(rendered: Rendered) -> list[dict[str, Any]]:
    return [p for p in rendered.of_kind("NetworkPolicy") if "-group-" in p["metadata"]["name"]]


def test_each_group_gets_a_policy_for_its_own_pods_only(
    lws: dict[str, Any], scenario_renders: dict[str, Rendered]
) -> None:
    policies = _group_policies(scenario_renders["leaderworkerset"])
    assert len(policies) == lws["spec"]["replicas"] == 1
    spec = policies[0]["spec"]
    group = {
        "leaderworkerset.sigs.k8s.io/name": lws["metadata"]["name"],
        "leaderworkerset.sigs.k8s.io/group-index": "0",
    }
    assert group.items() <= spec["podSelector"]["matchLabels"].items()
    [rule] = spec["ingress"]
    [peer] = rule["from"]
    assert peer == {"podSelector": {"matchLabels": spec["podSelector"]["matchLabels"]}}


def test_the_group_policy_admits_only_the_distributed_ports(
    scenario_renders: dict[str, Rendered],
) -> None:
    [policy] = _group_policies(scenario_renders["leaderworkerset"])
    [rule] = policy["spec"]["ingress"]
    ranges = [(p["protocol"], p["port"], p["endPort"]) for p in rule["ports"]]
    assert ranges == [("TCP", 20000, 20005), ("TCP", 40000, 44095)]


def test_the_main_policy_admits_only_the_server_port(
    scenario_renders: dict[str, Rendered],
) -> None:
    [main] = [
        p
        for p in scenario_renders["leaderworkerset"].of_kind("NetworkPolicy")
        if "-group-" not in p["metadata"]["name"]
    ]
    for rule in main["spec"]["ingress"]:
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


@pytest.mark.parametrize("role", ["leaderTemplate", "workerTemplate"])
def test_nccl_listens_in_the_admitted_range(lws: dict[str, Any], role: str) -> None:
    spec = lws["spec"]["leaderWorkerTemplate"][role]["spec"]
    assert spec["securityContext"]["sysctls"] == [
        {"name": "net.ipv4.ip_local_port_range", "value": "40000 44095"}
    ]


def test_one_group_policy_per_group(render: Any) -> None:
    rendered = render(
        set_values=(*MULTI_NODE, "multiNode.replicas=3"),
    )
    names = [p["metadata"]["name"] for p in _group_policies(rendered)]
    assert names == [f"kthybrid-group-{i}" for i in range(3)]


@pytest.mark.parametrize(
    ("start", "end"), [(19990, 20001), (20005, 20010), (29000, 31000), (50000, 40000), (80, 2000)]
)
def test_an_ephemeral_range_over_a_fixed_port_or_reversed_is_refused(
    render: Any, start: int, end: int
) -> None:
    with pytest.raises(RenderError) as caught:
        render(
            set_values=(
                *MULTI_NODE,
                f"multiNode.ephemeralPorts.start={start}",
                f"multiNode.ephemeralPorts.end={end}",
            ),
            extra=("--skip-schema-validation",),
        )
    assert f"multiNode.ephemeralPorts={start}-{end}" in str(caught.value)


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
