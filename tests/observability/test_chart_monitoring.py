"""The chart turns metrics on, monitors leaders and workers, ships the dashboard and the
alerts, and lets the scraper through its NetworkPolicy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.helm_chart import HELM, Rendered, RenderError, run_helm_template, scenario_file

MONITORING = Path(__file__).resolve().parents[2] / "helm/kthybrid/files/monitoring"


@pytest.fixture(scope="module")
def default() -> Rendered:
    return run_helm_template(HELM)


@pytest.fixture(scope="module")
def multinode() -> Rendered:
    return run_helm_template(HELM, scenario_file("leaderworkerset"))


def _env(rendered: Rendered) -> dict[str, Any]:
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    server = next(c for c in pod["containers"] if c["name"] == "server")
    return {e["name"]: e.get("value") for e in server["env"]}


def test_the_default_render_turns_sglangs_metrics_on(default: Rendered) -> None:
    assert _env(default)["KTHYBRID_ENABLE_METRICS"] == "true"


def test_the_default_render_ships_the_dashboard_for_grafanas_sidecar(default: Rendered) -> None:
    [config_map] = [c for c in default.of_kind("ConfigMap") if "kthybrid.json" in c["data"]]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(config_map["data"]["kthybrid.json"])
    assert shipped == json.loads((MONITORING / "dashboard.json").read_text())


def test_multinode_monitors_the_leaders_and_the_workers_as_job_kthybrid(
    multinode: Rendered,
) -> None:
    service_monitor = multinode.one("ServiceMonitor")
    pod_monitor = multinode.one("PodMonitor")
    assert pod_monitor["spec"]["selector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["worker"]}
    ]
    service = multinode.one("Service")
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "leader"
    for endpoint in (service_monitor["spec"]["endpoints"][0],
                     pod_monitor["spec"]["podMetricsEndpoints"][0]):  # fmt: skip
        assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
        assert {"targetLabel": "job", "replacement": "kthybrid"} in endpoint["relabelings"]


def test_the_prometheus_rule_carries_the_alert_file(multinode: Rendered) -> None:
    rule = multinode.one("PrometheusRule")
    expected = yaml.safe_load((MONITORING / "kthybrid.rules.yaml").read_text())["groups"]
    assert rule["spec"]["groups"] == expected


def test_the_network_policy_admits_the_scraper(default: Rendered) -> None:
    policy = default.one("NetworkPolicy")
    peers = [p for rule in policy["spec"]["ingress"] for p in rule.get("from", [])]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    } in peers


def test_monitors_without_metrics_are_refused() -> None:
    with pytest.raises(RenderError, match="scrape a /metrics that sglang does not serve"):
        run_helm_template(HELM, set_values=("serviceMonitor.enabled=true",
                                            "metrics.enabled=false"))  # fmt: skip


def test_tracing_and_json_request_logs_reach_the_launcher() -> None:
    values = ("metrics.requestLogs=json", "metrics.otlpTracesEndpoint=otel:4317")
    rendered = run_helm_template(HELM, set_values=values)
    env = _env(rendered)
    assert (env["KTHYBRID_LOG_REQUESTS"], env["KTHYBRID_OTLP_TRACES_ENDPOINT"]) == (
        "json", "otel:4317")  # fmt: skip


@pytest.mark.parametrize("scenario", ["router", "router-leaderworkerset"])
def test_with_the_router_the_servers_are_scraped_as_pods_not_through_the_routers_service(
    scenario: str,
) -> None:
    rendered = run_helm_template(HELM, scenario_file(scenario),
                                 set_values=("serviceMonitor.enabled=true",))  # fmt: skip
    # The chart's Service selects the router; a ServiceMonitor on it would scrape the router's
    # HTTP port, so only the router's own monitor (its metrics port) may select a Service.
    for monitor in rendered.of_kind("ServiceMonitor"):
        assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == (
            "router"
        )
    serving = ["server"] if scenario == "router" else ["leader", "worker"]
    pod_monitor = rendered.one("PodMonitor")
    assert pod_monitor["spec"]["selector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": serving}
    ]
    if scenario == "router":
        component = "app.kubernetes.io/component"
        deployments = rendered.of_kind("Deployment")
        [servers] = [d for d in deployments if d["metadata"]["labels"][component] == "server"]
        containers = servers["spec"]["template"]["spec"]["containers"]
        [server] = [c for c in containers if c["name"] == "server"]
        assert "http" in {port["name"] for port in server["ports"]}
