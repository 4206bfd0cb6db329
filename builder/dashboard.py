"""The Grafana dashboard, written once: `python -m builder.dashboard` writes the chart's copy.

The panels' queries are evaluated against a real Prometheus scraping sglang-kt's own metrics
code in tests/observability; compose/monitoring/dashboard.json is a copy tied by a test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SEL = 'job="kthybrid", instance=~"$instance"'
RATE = "$__rate_interval"

# (title, unit, [(legend, expr)], width)
PANELS: list[tuple[str, str, list[tuple[str, str]], int]] = [
    ("Decode tokens/s against the CPU decode ceiling", "short", [
        ("decode {{instance}}",
         f'sum by (instance) (rate(sglang:realtime_tokens_total{{{SEL}, mode="decode"}}[{RATE}]))'),
        ("CPU ceiling {{instance}}",
         f"max by (instance) (kthybrid_plan_cpu_decode_ceiling_tokens_per_second{{{SEL}}})"),
    ], 12),
    ("Throughput (tokens/s)", "short", [
        ("prompt {{instance}}",
         f"sum by (instance) (rate(sglang:prompt_tokens_total{{{SEL}}}[{RATE}]))"),
        ("generated {{instance}}",
         f"sum by (instance) (rate(sglang:generation_tokens_total{{{SEL}}}[{RATE}]))"),
        ("requests/s {{instance}}",
         f"sum by (instance) (rate(sglang:num_requests_total{{{SEL}}}[{RATE}]))"),
    ], 12),
    ("Time to first token", "s", [
        (f"p{q} {{{{instance}}}}",
         f"histogram_quantile(0.{q}, sum by (instance, le) "
         f"(rate(sglang:time_to_first_token_seconds_bucket{{{SEL}}}[{RATE}])))")
        for q in ("50", "90", "95", "99")
    ], 12),
    ("Inter-token latency", "s", [
        (f"p{q} {{{{instance}}}}",
         f"histogram_quantile(0.{q}, sum by (instance, le) "
         f"(rate(sglang:inter_token_latency_seconds_bucket{{{SEL}}}[{RATE}])))")
        for q in ("50", "90", "95", "99")
    ], 12),
    ("Running and queued requests", "short", [
        ("running {{instance}}", f"sum by (instance) (sglang:num_running_reqs{{{SEL}}})"),
        ("queued {{instance}}", f"sum by (instance) (sglang:num_queue_reqs{{{SEL}}})"),
    ], 12),
    ("KV cache usage", "percentunit", [
        ("token usage {{instance}}", f"max by (instance) (sglang:token_usage{{{SEL}}})"),
        ("prefix cache hit rate {{instance}}",
         f"max by (instance) (sglang:cache_hit_rate{{{SEL}}})"),
    ], 12),
    ("Plan: CPU threads per pool", "short", [
        ("pool {{pool}} on node {{node}} ({{instance}})",
         f"kthybrid_plan_cpu_threads{{{SEL}}}"),
    ], 8),
    ("Plan: experts and memory", "bytes", [
        ("CPU expert bytes {{instance}}", f"kthybrid_plan_cpu_expert_bytes{{{SEL}}}"),
        ("host memory budget {{instance}}",
         f"kthybrid_plan_host_memory_budget_bytes{{{SEL}}}"),
    ], 8),
    ("Plan: GPU experts per layer", "short", [
        ("{{instance}}", f"kthybrid_plan_gpu_experts{{{SEL}}}"),
    ], 8),
]  # fmt: skip

INFO_TABLE = (
    "Plan",
    f"kthybrid_plan_info{{{SEL}}}",
    ["instance", "method", "thread_source", "hugepages", "target", "model"],
)


def _timeseries(pid: int, title: str, unit: str, targets: list[tuple[str, str]],
                x: int, y: int, w: int) -> dict[str, Any]:  # fmt: skip
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    x = y = 0
    for pid, (title, unit, targets, width) in enumerate(PANELS, start=1):
        if x + width > 24:
            x, y = 0, y + 8
        panels.append(_timeseries(pid, title, unit, targets, x, y, width))
        x += width
    title, expr, columns = INFO_TABLE
    panels.append({
        "id": len(panels) + 1,
        "type": "table",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": 0, "y": y + 8, "w": 24, "h": 5},
        "targets": [{"refId": "A", "expr": expr, "format": "table", "instant": True}],
        "transformations": [{"id": "organize", "options": {
            "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True},
            "indexByName": {c: i for i, c in enumerate(columns)},
        }}],
    })  # fmt: skip
    templating = {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus",
         "label": "Prometheus"},
        {"name": "instance", "type": "query", "label": "Server",
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": 'label_values(up{job="kthybrid"}, instance)',
         "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
         "current": {"text": "All", "value": "$__all"}},
    ]}  # fmt: skip
    return {
        "title": "kthybrid",
        "uid": "kthybrid-serving",
        "description": "sglang-kt serving and the kthybrid launcher's plan (tokens/s against "
        "the CPU decode ceiling). Written by builder/dashboard.py.",
        "tags": ["kthybrid", "sglang"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": templating,
        "panels": panels,
    }


DASHBOARD = Path(__file__).resolve().parent.parent / "helm/kthybrid/files/monitoring/dashboard.json"


def dashboard_text() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    DASHBOARD.write_text(dashboard_text(), encoding="utf-8")


if __name__ == "__main__":
    main()
