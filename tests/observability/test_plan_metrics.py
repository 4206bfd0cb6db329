"""The plan's gauges are written in prometheus_client's multiprocess format and read back by
its MultiProcessCollector (what sglang's /metrics serves), one file per start."""

from __future__ import annotations

from pathlib import Path

import pytest
from kthybrid_serve.errors import MetricsError
from kthybrid_serve.metrics import PLAN_FILE, Sample, metrics_dir, write_samples
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector


def _scrape(directory: Path) -> str:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry).decode()


def test_the_collector_sglang_serves_reads_the_plan_file(tmp_path: Path) -> None:
    samples = [
        Sample("kthybrid_plan_info", (("method", "MXFP4"), ("thread_source", "rule")), 1.0),
        Sample("kthybrid_plan_cpu_threads", (("pool", "0"), ("node", "1")), 14.0),
        Sample("kthybrid_plan_gpu_experts", (), 28.0),
    ]
    assert write_samples(tmp_path, samples, 1000.0) == tmp_path / PLAN_FILE
    text = _scrape(tmp_path)
    assert 'kthybrid_plan_info{method="MXFP4",thread_source="rule"} 1.0' in text
    assert 'kthybrid_plan_cpu_threads{node="1",pool="0"} 14.0' in text
    assert "kthybrid_plan_gpu_experts 28.0" in text
    assert "pid=" not in text


def test_each_start_gets_a_fresh_directory_inside_the_one_given(tmp_path: Path) -> None:
    first = metrics_dir({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    second = metrics_dir({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert first != second and first.parent == second.parent == tmp_path


def test_an_unwritable_directory_is_one_clear_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(MetricsError, match="KTHYBRID_ENABLE_METRICS=false"):
        metrics_dir({"PROMETHEUS_MULTIPROC_DIR": str(blocked)})
