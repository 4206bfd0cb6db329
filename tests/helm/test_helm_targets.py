"""The chart takes its targets from files/targets.yaml, which the builder renders from
builder/targets.yaml: no target is named by hand in the chart or in these tests."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart import (
    CHART_DIR,
    DEFAULT_TARGET,
    GOLDEN_DIR,
    TARGETS,
    Rendered,
    RenderError,
    container,
    load_yaml,
    run_helm_template,
)

from builder.matrix import TARGETS_FILE, load_targets, load_versions
from builder.render import render_all

EXTRA_TARGET_DATA = Path(__file__).resolve().parents[1] / "builder" / "data" / "sm86-target.yaml"


def _products(rendered: Rendered) -> list[str]:
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    values: list[str] = terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
    return values


def _retargeted(documents: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """The default golden render as it must look for another target: the target label,
    the image tag and the GPU products change, nothing else."""
    products = load_yaml(CHART_DIR / "files" / "targets.yaml")[target]["gpuProducts"]
    text = json.dumps(documents)
    label = '"kthybrid.io/target": "{}"'
    text = text.replace(label.format(DEFAULT_TARGET), label.format(target))
    text = text.replace(f'-cu128-{DEFAULT_TARGET}"', f'-cu128-{target}"')
    derived: list[dict[str, Any]] = json.loads(text)
    for doc in derived:
        if doc["kind"] == "Deployment":
            affinity = doc["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
            terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            terms[0]["matchExpressions"][0]["values"] = copy.deepcopy(products)
    return derived


def test_the_chart_reads_the_builders_targets() -> None:
    assert sorted(load_yaml(CHART_DIR / "files" / "targets.yaml")) == TARGETS


def test_the_schema_names_no_target() -> None:
    """An enum there would be a hand-kept copy of the data; the chart checks the file instead."""
    target = json.loads((CHART_DIR / "values.schema.json").read_text())["properties"]["target"]
    assert "enum" not in target


def test_default_target_is_a_target_of_the_data() -> None:
    assert DEFAULT_TARGET in TARGETS


@pytest.mark.parametrize("target", TARGETS)
def test_target_render_is_the_default_golden_with_the_targets_image_and_gpus(
    render: Any, target: str
) -> None:
    golden = [d for d in yaml.safe_load_all((GOLDEN_DIR / "defaults.yaml").read_text()) if d]
    rendered: Rendered = render(set_values=(f"target={target}",))
    assert rendered.documents == _retargeted(golden, target)


@pytest.mark.parametrize("target", TARGETS)
def test_target_picks_its_image_and_gpu_products(render: Any, target: str) -> None:
    rendered: Rendered = render(set_values=(f"target={target}",))
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert container(spec, "server")["image"] == f"kthybrid:0.7.2-cu128-{target}"
    products = [p.replace(" ", "-") for p in load_targets()[target].gpu_products]
    assert _products(rendered) == products


def test_gpu_products_can_be_replaced(render: Any) -> None:
    rendered = render(set_values=("gpuNodeAffinity.products={NVIDIA-H200-SXM}",))
    assert _products(rendered) == ["NVIDIA-H200-SXM"]


def test_gpu_node_affinity_can_be_turned_off(render: Any) -> None:
    rendered = render(set_values=("gpuNodeAffinity.enabled=false",))
    assert "affinity" not in rendered.one("Deployment")["spec"]["template"]["spec"]


def test_an_unknown_target_is_refused_by_the_chart_with_the_targets_of_the_data(
    render: Any,
) -> None:
    with pytest.raises(RenderError) as caught:
        render(set_values=("target=sm80",))
    expected = ", ".join(sorted(TARGETS))
    assert f'target "sm80" is not a kthybrid target: use one of {expected}' in str(caught.value)


def test_an_extra_target_in_the_data_is_served_by_the_chart(helm: Path, tmp_path: Path) -> None:
    """Adding a target is a data change only: the builder renders files/targets.yaml and the
    chart (schema included) takes the new target without an edit."""
    data = yaml.safe_load(TARGETS_FILE.read_text())
    data["targets"]["sm86"] = yaml.safe_load(EXTRA_TARGET_DATA.read_text())
    targets_file = tmp_path / "targets.yaml"
    targets_file.write_text(yaml.safe_dump(data, allow_unicode=True))
    tree = tmp_path / "tree"
    rendered_files = render_all(load_targets(targets_file), load_versions(), root=tree)
    chart = tree / "helm" / "kthybrid"
    shutil.copytree(CHART_DIR, chart, ignore=shutil.ignore_patterns("files"))
    for item in rendered_files:
        if item.relative.startswith("helm/kthybrid/"):
            item.path.parent.mkdir(parents=True, exist_ok=True)
            item.path.write_text(item.text)
    rendered = run_helm_template(helm, set_values=("target=sm86",), chart=chart)
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert container(spec, "server")["image"] == "kthybrid:0.7.2-cu128-sm86"
    assert "NVIDIA-GeForce-RTX-3090" in _products(rendered)
