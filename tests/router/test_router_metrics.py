"""The router's Prometheus metrics, on their own port, as the chart's monitor scrapes them."""

from __future__ import annotations

import urllib.request

from router_fixtures import Router, chat


def test_the_router_exports_prometheus_metrics_of_worker_selection(router: Router) -> None:
    chat(router, "count me")
    url = f"http://127.0.0.1:{router.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    assert "smg_worker_selection_total" in text
    assert 'policy="cache_aware"' in text
