"""A real Prometheus scrapes the stand-in (sglang-kt's own metrics code plus the plan) and
evaluates every dashboard query and every alert expression the project ships."""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import yaml
from observability_stack import (
    API_KEY,
    CONTAINER,
    DASHBOARD,
    MODEL,
    RULES,
    Prometheus,
    StandIn,
    http_get,
    wait_for_series,
)

# Grafana's variables, as a dashboard user with every server selected sends them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}
# Which server each alert must fire for (and the healthy one never).
EXPECTED_FIRING = {
    "KthybridServerDown": "down",
    "KthybridNoTokensWhileRequestsWait": "overloaded",
    "KthybridQueueGrowing": "overloaded",
    "KthybridTimeToFirstTokenHigh": "overloaded",
    "KthybridRestarted": "overloaded",
}


def dashboard_queries() -> list[tuple[str, str]]:
    data = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in data["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            queries.append((panel["title"], expr))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def scenarios(result: list[dict[str, Any]], standin: StandIn) -> set[str]:
    by_target = {standin.healthy: "healthy", standin.overloaded: "overloaded",
                 standin.down: "down"}  # fmt: skip
    return {by_target[s["metric"]["instance"]] for s in result if "instance" in s["metric"]}


def wait_for_scenarios(
    prometheus: Prometheus, expr: str, standin: StandIn, wanted: set[str], timeout: float = 90
) -> set[str]:
    """The servers the query has series for, once it has them for every wanted one (each
    target is scraped at its own moment, so the first answer may lack some)."""
    deadline = time.monotonic() + timeout
    while True:
        found = scenarios(wait_for_series(prometheus, expr, timeout), standin)
        if found >= wanted or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_prometheus_scrapes_both_servers_and_marks_the_dead_one_down(
    prometheus: Prometheus, standin: StandIn
) -> None:
    found = wait_for_scenarios(prometheus, 'up{job="kthybrid"} == 1', standin,
                               {"healthy", "overloaded"})  # fmt: skip
    assert found >= {"healthy", "overloaded"}
    # The dead target is marked down only once its own first scrape has failed.
    down = wait_for_scenarios(prometheus, 'up{job="kthybrid"} == 0', standin, {"down"})
    assert down == {"down"}


def test_every_dashboard_query_returns_a_series_for_the_healthy_server(
    prometheus: Prometheus, standin: StandIn
) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15
    empty = []
    for title, expr in queries:
        if "healthy" not in wait_for_scenarios(prometheus, expr, standin, {"healthy"}, 60):
            empty.append(f"{title}: {expr}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


def test_every_alert_fires_for_its_failure_and_not_for_the_healthy_server(
    prometheus: Prometheus, standin: StandIn
) -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == set(EXPECTED_FIRING)
    for rule in rules:
        expected = EXPECTED_FIRING[rule["alert"]]
        # The overloaded server restarts once, some seconds after it starts.
        found = wait_for_scenarios(prometheus, rule["expr"], standin, {expected}, 120)
        assert expected in found, f"{rule['alert']} did not fire for {expected}: {found}"
        assert "healthy" not in found, f"{rule['alert']} fired for the healthy server"


def test_prometheus_loads_every_rule_and_evaluates_it_without_error(
    prometheus: Prometheus, standin: StandIn
) -> None:
    wait_for_series(prometheus, 'up{job="kthybrid"} == 1')
    groups = prometheus.api("/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(alert_rules())
    assert all(r["health"] in {"ok", "unknown"} for r in rules), rules
    assert not [r for r in rules if r.get("lastError")]


def test_metrics_answer_without_the_api_key_while_the_api_needs_it(standin: StandIn) -> None:
    assert http_get(f"http://{standin.healthy}/metrics")[0] == 200
    assert http_get(f"http://{standin.healthy}/v1/models")[0] == 401
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert http_get(f"http://{standin.healthy}/v1/models", auth)[0] == 200


def test_the_scrape_carries_sglangs_own_names(standin: StandIn) -> None:
    body = standin.metrics(standin.healthy)
    names = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", body, re.MULTILINE))
    assert {"sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage",
            "sglang:time_to_first_token_seconds_bucket", "sglang:realtime_tokens_total",
            "sglang:inter_token_latency_seconds_bucket", "sglang:generation_tokens_total",
            "kthybrid_plan_info"} <= names  # fmt: skip


def _plan_json(standin: StandIn) -> dict[str, Any]:
    args = ["docker", "exec"]
    for name, value in standin.env.items():
        args += ["-e", f"{name}={value}"]
    args += [CONTAINER, "python3", "-m", "kthybrid_serve", "plan", "--json"]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _samples(body: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    found = {}
    for labels, value in re.findall(rf"^{name}(?:\{{(.*?)\}})? (\S+)$", body, re.MULTILINE):
        pairs = frozenset(re.findall(r'(\w+)="([^"]*)"', labels))
        found[pairs] = float(value)
    return found


def test_plan_metrics_agree_with_plan_json_for_the_same_host_and_model(standin: StandIn) -> None:
    plan = _plan_json(standin)
    body = standin.metrics(standin.healthy)
    items = {i["name"]: i for i in plan["items"]}
    [info] = _samples(body, "kthybrid_plan_info")
    assert dict(info) == {"method": plan["kt_method"], "thread_source": "measured",
                          "hugepages": "off", "target": plan["target"],
                          "model": MODEL, "gpu_only": "false"}  # fmt: skip
    assert items["--kt-cpuinfer"]["source"] == "measured"
    threads = {
        (dict(k)["pool"], dict(k)["node"]): v
        for k, v in _samples(body, "kthybrid_plan_cpu_threads").items()
    }
    assert threads == {
        (str(i), str(n)): float(t)
        for i, (n, t) in enumerate(
            zip(plan["kt_numa_nodes"], plan["threads_per_pool"], strict=True)
        )
    }
    assert sum(threads.values()) == plan["kt_cpuinfer"]
    scalar = {name: next(iter(_samples(body, name).values())) for name in (
        "kthybrid_plan_gpu_experts", "kthybrid_plan_cpu_expert_bytes",
        "kthybrid_plan_host_memory_budget_bytes",
        "kthybrid_plan_cpu_decode_ceiling_tokens_per_second")}  # fmt: skip
    assert scalar["kthybrid_plan_gpu_experts"] == plan["kt_num_gpu_experts"]
    assert scalar["kthybrid_plan_cpu_expert_bytes"] == plan["cpu_expert_bytes"]
    assert scalar["kthybrid_plan_host_memory_budget_bytes"] == plan["host_memory_needed_bytes"]
    ceiling = items["CPU decode ceiling"]["value"]
    assert f"{scalar['kthybrid_plan_cpu_decode_ceiling_tokens_per_second']:.1f} tokens/s" == ceiling
