"""The chart takes its targets from files/targets.yaml, the data file the builder generates."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helm_chart import CHART_DIR, Rendered, container, load_yaml, scenario_file

TARGETS: dict[str, Any] = load_yaml(CHART_DIR / "files" / "targets.yaml")


def test_schema_target_enum_lists_exactly_the_generated_targets() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert sorted(schema["properties"]["target"]["enum"]) == sorted(TARGETS)


def test_default_target_is_a_generated_target() -> None:
    assert load_yaml(CHART_DIR / "values.yaml")["target"] in TARGETS


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_target_has_a_ci_scenario_or_is_the_default(target: str) -> None:
    default = load_yaml(CHART_DIR / "values.yaml")["target"]
    assert target == default or scenario_file(f"target-{target}").exists(), (
        f"add helm/kthybrid/ci/target-{target}-values.yaml"
    )


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target_picks_its_image_and_gpu_products(render: Any, target: str) -> None:
    rendered: Rendered = render(set_values=(f"target={target}",))
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert container(spec, "server")["image"] == f"kthybrid:0.7.2-cu128-{target}"
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expression = terms["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert expression == {
        "key": "nvidia.com/gpu.product",
        "operator": "In",
        "values": TARGETS[target]["gpuProducts"],
    }


def test_gpu_products_can_be_replaced(render: Any) -> None:
    rendered = render(set_values=("gpuNodeAffinity.products={NVIDIA-H200-SXM}",))
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["NVIDIA-H200-SXM"]


def test_gpu_node_affinity_can_be_turned_off(render: Any) -> None:
    rendered = render(set_values=("gpuNodeAffinity.enabled=false",))
    assert "affinity" not in rendered.one("Deployment")["spec"]["template"]["spec"]
