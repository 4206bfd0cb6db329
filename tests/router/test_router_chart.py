"""The chart with router.enabled: discovery by label, least privilege, only the router reaches
the servers, and the router's arguments as the real sglang_router parser reads them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.router import router_version

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "kthybrid"
HELM = REPO_ROOT / ".tools" / "bin" / "helm"
NAMESPACE = "serving"


def render(*values: str, scenario: str = "router") -> list[dict[str, Any]]:
    command = [str(HELM), "template", "kt", str(CHART), "--namespace", NAMESPACE,
               "--values", str(CHART / "ci" / f"{scenario}-values.yaml")]  # fmt: skip
    for value in values:
        command += ["--set", value]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise AssertionError(result.stderr)
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in docs
        if d["kind"] == kind
        and (
            component is None
            or d["metadata"]["labels"].get("app.kubernetes.io/component") == component
        )
    ]
    assert len(found) == 1, f"{len(found)} {kind} {component}"
    return found[0]


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render()


def test_the_router_role_only_reads_pods_of_its_namespace(docs: list[dict[str, Any]]) -> None:
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    binding = one(docs, "RoleBinding")
    account = one(docs, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]


def test_only_the_router_pod_gets_a_service_account_token(docs: list[dict[str, Any]]) -> None:
    router = one(docs, "Deployment", "router")["spec"]["template"]["spec"]
    server = one(docs, "Deployment", "server")["spec"]["template"]["spec"]
    assert router["automountServiceAccountToken"] is True
    assert router["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert server["automountServiceAccountToken"] is False


def test_the_chart_service_sends_clients_to_the_router(docs: list[dict[str, Any]]) -> None:
    service = next(
        d for d in docs if d["kind"] == "Service" and "ports" in d["spec"]
        and d["spec"]["ports"][0]["name"] == "http"
    )  # fmt: skip
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "router"


def test_only_the_router_and_metrics_peers_reach_the_servers(docs: list[dict[str, Any]]) -> None:
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert len(policies) == 2, "networkpolicy.yaml must render nothing with the router"
    servers = next(p for p in policies if "matchExpressions" in p["spec"]["podSelector"])
    server_labels = one(docs, "Deployment", "server")["spec"]["template"]["metadata"]["labels"]
    selector = servers["spec"]["podSelector"]
    assert all(server_labels[k] == v for k, v in selector["matchLabels"].items())
    assert selector["matchExpressions"][0]["operator"] == "NotIn"
    (rule,) = servers["spec"]["ingress"]
    peers = rule["from"]
    assert peers[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "router"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["metrics"]["enabled"] is True
    assert peers[1:] == values["metrics"]["scraperFrom"]


def test_the_router_image_tag_is_the_pinned_sglang_router(docs: list[dict[str, Any]]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["router"]["image"]["tag"] == f"router-{router_version()}"


def test_the_router_needs_the_api_key() -> None:
    with pytest.raises(AssertionError, match=r"router\.enabled=true needs apiKey\.enabled=true"):
        render("apiKey.enabled=false")


def test_a_secret_option_in_extra_args_is_refused_by_the_schema() -> None:
    with pytest.raises(AssertionError, match="extraArgs"):
        render("router.extraArgs[0]=--api-key=secret")


def parsed_by_sglang_router(image: str, args: list[str]) -> dict[str, Any]:
    script = (
        "import argparse, json, sys\n"
        "from sglang_router.router_args import RouterArgs\n"
        "p = argparse.ArgumentParser(); RouterArgs.add_cli_args(p)\n"
        "a = RouterArgs.from_cli_args(p.parse_args(sys.argv[1:]))\n"
        "print(json.dumps({k: getattr(a, k) for k in ('service_discovery', 'selector',\n"
        "  'service_discovery_port', 'service_discovery_namespace', 'policy', 'port',\n"
        "  'prometheus_port', 'worker_urls', 'api_key', 'retry_max_retries')}))\n"
    )
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "/opt/router/bin/python",
         image, "-c", script, *args],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.mark.parametrize("scenario", ["router", "router-leaderworkerset"])
def test_sglang_router_reads_the_chart_arguments_as_discovery_of_the_serving_pods(
    router_image: str, scenario: str
) -> None:
    docs = render(scenario=scenario)
    router = one(docs, "Deployment", "router")["spec"]["template"]["spec"]["containers"][0]
    parsed = parsed_by_sglang_router(router_image, router["args"])
    serving = [
        d for d in docs if d["kind"] in ("Deployment", "LeaderWorkerSet")
        and d["metadata"]["labels"].get("app.kubernetes.io/component") != "router"
    ]  # fmt: skip
    (workload,) = serving
    if workload["kind"] == "Deployment":
        pod = workload["spec"]["template"]
    else:
        pod = workload["spec"]["leaderWorkerTemplate"]["leaderTemplate"]
    port = next(p for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "http")
    assert parsed["service_discovery"] is True
    assert parsed["selector"] == {
        k: v for k, v in pod["metadata"]["labels"].items() if k.startswith("app.kubernetes.io/")
    }
    assert parsed["service_discovery_port"] == port["containerPort"]
    assert parsed["service_discovery_namespace"] == NAMESPACE
    assert parsed["policy"] == ("cache_aware" if scenario == "router" else "power_of_two")
    assert parsed["api_key"] is None, "the key must come from the file, not the arguments"
    assert parsed["worker_urls"] == []
