"""The chart's launcher options follow from kthybrid_serve/settings.py: `python -m builder render`
writes their values.yaml entries, schema nodes and KTHYBRID_* variables, with the launcher's
own ranges; every other number in the schema has a range Kubernetes accepts."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart import CHART_DIR, RenderError, container, env_of, run_helm_template
from kthybrid_serve.parsers import Choice, IntListRange, IntRange, OpenInterval, int_in
from kthybrid_serve.settings import OPTIONS, Option, OptionSpec

from builder.chart import chart_options, render_chart
from builder.errors import RenderDriftError

SCHEMA: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text())
INT32_MAX = 2**31 - 1
# Every number in the schema that is no launcher option: where it lands and the range that
# place takes (Kubernetes' int32 and int64 fields, ports, Gi quantities that fit int64 bytes).
PORT = (1, 65535)
INT32 = (0, INT32_MAX)
GI_IN_INT64 = (0, (2**63 - 1) // 2**30)
NOT_LAUNCHER: dict[str, tuple[str, tuple[int, int]]] = {
    "hostMemory.cpuExpertWeightsGi": ("memory request/limit (Gi)", GI_IN_INT64),
    "hostMemory.pinnedBuffersGi": ("memory request/limit (Gi)", GI_IN_INT64),
    "hostMemory.shmGi": ("/dev/shm emptyDir sizeLimit (Gi)", GI_IN_INT64),
    "hostMemory.hugepagesGi": ("hugepages-2Mi request (Gi)", GI_IN_INT64),
    "hostMemory.headroomGi": ("memory request/limit (Gi)", GI_IN_INT64),
    "hostMemory.limitGi": ("memory request/limit (Gi)", GI_IN_INT64),
    "resources.cpu": ("cpu request/limit (cores)", INT32),
    "resources.gpus": ("nvidia.com/gpu request/limit", INT32),
    "resources.ephemeralStorageGi": ("ephemeral-storage request/limit (Gi)", GI_IN_INT64),
    "replicaCount": ("Deployment spec.replicas (int32)", INT32),
    "startup.deadlineSeconds": ("startupProbe failureThreshold x period (int32)", INT32),
    "startup.periodSeconds": ("startupProbe periodSeconds (int32)", INT32),
    "readiness.periodSeconds": ("readinessProbe periodSeconds (int32)", INT32),
    "readiness.timeoutSeconds": ("readinessProbe timeoutSeconds (int32)", INT32),
    "readiness.failureThreshold": ("readinessProbe failureThreshold (int32)", INT32),
    "liveness.periodSeconds": ("livenessProbe periodSeconds (int32)", INT32),
    "liveness.timeoutSeconds": ("livenessProbe timeoutSeconds (int32)", INT32),
    "liveness.failureThreshold": ("livenessProbe failureThreshold (int32)", INT32),
    "shutdown.drainSeconds": ("preStop sleep, part of terminationGracePeriodSeconds", INT32),
    "shutdown.releaseSecondsPer100Gi": ("part of terminationGracePeriodSeconds", INT32),
    "shutdown.terminationGracePeriodSeconds": ("terminationGracePeriodSeconds (int64)", INT32),
    "models.download.cpu": ("download container cpu (cores)", INT32),
    "models.download.memoryGi": ("download container memory (Gi)", GI_IN_INT64),
    "convert.cpu": ("convert Job cpu (cores)", INT32),
    "convert.memoryGi": ("convert Job memory (Gi)", GI_IN_INT64),
    "convert.backoffLimit": ("Job spec.backoffLimit (int32)", INT32),
    "multiNode.replicas": ("LeaderWorkerSet spec.replicas (int32)", INT32),
    # sglang also listens on the five ports above --dist-init-addr's.
    "multiNode.distInitPort": ("leader port for --dist-init-addr", (1, 65530)),
    # net.ipv4.ip_local_port_range: unprivileged ports only (NetworkPolicy port/endPort).
    "multiNode.ephemeralPorts.start": ("ip_local_port_range's first port", (1024, 65535)),
    "multiNode.ephemeralPorts.end": ("ip_local_port_range's last port", (1024, 65535)),
    "podSecurityContext.runAsUser": ("runAsUser (int64; 0 is root)", (1, INT32_MAX)),
    "podSecurityContext.runAsGroup": ("runAsGroup (int64)", INT32),
    "podSecurityContext.fsGroup": ("fsGroup (int64)", INT32),
    "service.port": ("Service port", PORT),
    "podDisruptionBudget.maxUnavailable": ("PodDisruptionBudget maxUnavailable (int32)", INT32),
    "helmTest.maxTokens": ("the helm test request's max_tokens", INT32),
    "helmTest.timeoutSeconds": ("the helm test script's timeout", INT32),
    "router.replicaCount": ("router Deployment spec.replicas (int32)", INT32),
    "router.port": ("router containerPort", PORT),
    "router.metricsPort": ("router metrics containerPort", PORT),
    "router.resources.cpu": ("router cpu request/limit (cores)", INT32),
    "router.resources.memoryGi": ("router memory request/limit (Gi)", GI_IN_INT64),
}


def _node(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split("."):
        node = node["properties"][part]
    return node


def _numbers(node: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every schema node that takes a number, by value path."""
    found = {}
    kinds = node.get("type", [])
    if {"integer", "number"} & set(kinds if isinstance(kinds, list) else [kinds]):
        found[prefix] = node
    for key, child in node.get("properties", {}).items():
        found |= _numbers(child, f"{prefix}.{key}" if prefix else key)
    if isinstance(node.get("items"), dict):
        found |= _numbers(node["items"], f"{prefix}[]")
    return found


@pytest.mark.parametrize("option", chart_options(), ids=lambda o: o.path)
def test_each_launcher_options_schema_range_is_the_launchers(option: Any) -> None:
    node = _node(SCHEMA, option.path)
    parse = option.parse
    if isinstance(parse, IntRange):
        assert (node["minimum"], node["maximum"]) == (parse.low, parse.high)
    elif isinstance(parse, IntListRange):
        items = node["items"]
        assert (items["minimum"], items["maximum"]) == (parse.low, parse.high)
    elif isinstance(parse, OpenInterval):
        assert (node["exclusiveMinimum"], node["exclusiveMaximum"]) == (parse.low, parse.high)
    elif isinstance(parse, Choice):
        assert [c for c in node["enum"] if c is not None] == list(parse.choices)
    else:
        assert not {"minimum", "maximum", "enum"} & set(node), option.path
    for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        assert bound not in node or isinstance(parse, (IntRange, OpenInterval)), option.path


def test_every_number_in_the_schema_is_a_launcher_option_or_a_listed_kubernetes_field() -> None:
    launcher = {o.path for o in chart_options()}
    launcher |= {f"{o.path}[]" for o in chart_options() if isinstance(o.parse, IntListRange)}
    numbers = set(_numbers(SCHEMA))
    assert numbers - launcher == set(NOT_LAUNCHER), "classify each number in NOT_LAUNCHER"


@pytest.mark.parametrize("path", sorted(NOT_LAUNCHER))
def test_each_other_number_has_a_range_its_kubernetes_field_accepts(path: str) -> None:
    node = _node(SCHEMA, path)
    low, high = NOT_LAUNCHER[path][1]
    assert node["type"] == "integer", path
    assert low <= node["minimum"] <= node["maximum"] <= high, (path, NOT_LAUNCHER[path][0])


def test_the_committed_chart_is_a_fresh_render() -> None:
    for path, text in render_chart(CHART_DIR).items():
        assert path.read_text() == text, f"{path} is stale: run `make generate`"


# -- a new launcher option, added in settings only, reaches the chart through the render --

NEW = Option("kt_new_knob", None, OptionSpec("a test knob", int_in(2, 99), helm="kt.newKnob"))


@pytest.fixture(scope="module")
def new_option_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chart = tmp_path_factory.mktemp("chart") / "kthybrid"
    shutil.copytree(CHART_DIR, chart)
    for path, text in render_chart(chart, chart_options((*OPTIONS, NEW))).items():
        path.write_text(text)
    return chart


def test_a_new_option_gets_its_param_line_in_values_yaml(new_option_chart: Path) -> None:
    values = (new_option_chart / "values.yaml").read_text()
    assert (
        "## @param kt.newKnob A test knob (KTHYBRID_KT_NEW_KNOB), a whole number from 2 to 99;"
        in (values)
    )
    assert yaml.safe_load(values)["kt"] == {}  # unset: the launcher's default


def test_a_new_option_gets_the_launchers_range_in_the_schema(new_option_chart: Path) -> None:
    schema = json.loads((new_option_chart / "values.schema.json").read_text())
    node = _node(schema, "kt.newKnob")
    assert (node["type"], node["minimum"], node["maximum"]) == (["integer", "null"], 2, 99)


def test_a_new_option_set_on_the_command_line_reaches_its_variable(
    helm: Path, new_option_chart: Path
) -> None:
    rendered = run_helm_template(helm, set_values=("kt.newKnob=42",), chart=new_option_chart)
    server = container(rendered.one("Deployment")["spec"]["template"]["spec"], "server")
    assert env_of(server)["KTHYBRID_KT_NEW_KNOB"] == "42"


def test_a_new_option_out_of_the_launchers_range_is_refused(
    helm: Path, new_option_chart: Path
) -> None:
    with pytest.raises(RenderError, match="newKnob"):
        run_helm_template(helm, set_values=("kt.newKnob=100",), chart=new_option_chart)


def test_a_removed_option_leaves_no_schema_node_behind(new_option_chart: Path) -> None:
    rendered = render_chart(new_option_chart)
    schema = json.loads(rendered[new_option_chart / "values.schema.json"])
    assert "newKnob" not in schema["properties"]["kt"]["properties"]
    assert "kt.newKnob" not in rendered[new_option_chart / "values.yaml"]
    assert "KTHYBRID_KT_NEW_KNOB" not in rendered[new_option_chart / "templates" / "_pod.tpl"]


@pytest.mark.parametrize("name", ["values.yaml", "templates/_pod.tpl"])
def test_a_chart_file_without_its_markers_is_an_error(tmp_path: Path, name: str) -> None:
    chart = tmp_path / "kthybrid"
    shutil.copytree(CHART_DIR, chart)
    file = chart / name
    file.write_text("\n".join(line for line in file.read_text().splitlines()
                              if "launcher-options" not in line))  # fmt: skip
    with pytest.raises(RenderDriftError, match="launcher-options"):
        render_chart(chart)


def test_an_option_under_a_value_the_schema_lacks_is_an_error(tmp_path: Path) -> None:
    stray = dataclasses.replace(NEW, spec=dataclasses.replace(NEW.spec, helm="nowhere.knob"))
    with pytest.raises(RenderDriftError, match="nowhere"):
        render_chart(CHART_DIR, chart_options((*OPTIONS, stray)))


# -- numbers from --set: helm 4 reads "0.8" as a string, "60" as an int64 --


@pytest.mark.parametrize(
    ("assignment", "variable", "expected"),
    [
        ("server.memFractionStatic=0.8", "KTHYBRID_MEM_FRACTION_STATIC", "0.8"),
        ("kt.cpuinfer=60", "KTHYBRID_KT_CPUINFER", "60"),
        ("server.contextLength=32768", "KTHYBRID_CONTEXT_LENGTH", "32768"),
    ],
)
def test_a_number_from_set_reaches_its_variable(
    render: Any, assignment: str, variable: str, expected: str
) -> None:
    rendered = render(set_values=(assignment,))
    server = container(rendered.one("Deployment")["spec"]["template"]["spec"], "server")
    assert env_of(server)[variable] == expected


def test_a_fraction_from_set_json_reaches_its_variable(render: Any) -> None:
    rendered = render(extra=("--set-json", "server.memFractionStatic=0.8"))
    server = container(rendered.one("Deployment")["spec"]["template"]["spec"], "server")
    assert env_of(server)["KTHYBRID_MEM_FRACTION_STATIC"] == "0.8"


@pytest.mark.parametrize("value", ["1.5", "1", "0", "0.0", "abc", "-0.5", "1e-3"])
def test_a_fraction_from_set_outside_zero_to_one_is_refused(render: Any, value: str) -> None:
    with pytest.raises(RenderError, match="memFractionStatic"):
        render(set_values=(f"server.memFractionStatic={value}",))


@pytest.mark.parametrize(
    "assignment", ["kt.cpuinfer=100000001", "server.contextLength=100000001", "multiNode.size=1025"]
)
def test_a_number_above_the_launchers_range_is_refused(render: Any, assignment: str) -> None:
    with pytest.raises(RenderError, match=assignment.split("=")[0].split(".")[-1]):
        render(set_values=(assignment,))
