"""Launcher options: unset or null leaves the variable out (the launcher's default);
a set value reaches KTHYBRID_* unchanged; extra arguments travel as a JSON array."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart import SCENARIOS, Rendered, container, env_of, pod_specs
from kthybrid_serve.settings import ENV_NAMES

OPTIONS = [
    ("server.contextLength", 131072, "KTHYBRID_CONTEXT_LENGTH", "131072"),
    ("server.memFractionStatic", 0.8, "KTHYBRID_MEM_FRACTION_STATIC", "0.8"),
    ("server.tpSize", 1, "KTHYBRID_TP_SIZE", "1"),
    ("server.mtp", False, "KTHYBRID_MTP", "false"),
    ("server.trustRemoteCode", True, "KTHYBRID_TRUST_REMOTE_CODE", "true"),
    ("kt.weightPath", "/models/w", "KTHYBRID_KT_WEIGHT_PATH", "/models/w"),
    ("kt.method", "AMXINT4", "KTHYBRID_KT_METHOD", "AMXINT4"),
    ("kt.cpuinfer", 30, "KTHYBRID_KT_CPUINFER", "30"),
    ("kt.numGpuExperts", 0, "KTHYBRID_KT_NUM_GPU_EXPERTS", "0"),
    ("kt.numaPolicy", "local", "KTHYBRID_NUMA_POLICY", "local"),
]


def _values_file(tmp_path: Path, path: str, value: Any) -> Path:
    section, key = path.split(".")
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump({section: {key: value}}))
    return file


def _server_env(rendered: Rendered) -> dict[str, Any]:
    return env_of(container(rendered.one("Deployment")["spec"]["template"]["spec"], "server"))


@pytest.mark.parametrize(("path", "value", "variable", "expected"), OPTIONS)
def test_a_value_from_a_values_file_reaches_its_variable(
    render: Any, tmp_path: Path, path: str, value: Any, variable: str, expected: str
) -> None:
    env = _server_env(render(_values_file(tmp_path, path, value)))
    assert env[variable] == expected


@pytest.mark.parametrize(("path", "value", "variable", "expected"), OPTIONS)
def test_null_in_a_values_file_leaves_the_variable_out(
    render: Any, tmp_path: Path, path: str, value: Any, variable: str, expected: str
) -> None:
    assert variable not in _server_env(render(_values_file(tmp_path, path, None)))


@pytest.mark.parametrize(("path", "value", "variable", "expected"), OPTIONS)
def test_null_on_the_command_line_leaves_the_variable_out(
    render: Any, path: str, value: Any, variable: str, expected: str
) -> None:
    assert variable not in _server_env(render(set_values=(f"{path}=null",)))


def test_extra_args_arrive_as_a_json_array_with_spaces_and_quotes_intact(
    render: Any, tmp_path: Path
) -> None:
    args = ["--served-model-name", "Deep Seek", "--chat-template", '{"a": "b c"}', "--x=' y'"]
    env = _server_env(render(_values_file(tmp_path, "server.extraArgs", args)))
    assert json.loads(env["KTHYBRID_EXTRA_ARGS"]) == args


def test_no_extra_args_leave_the_variable_out(default_render: Rendered) -> None:
    assert "KTHYBRID_EXTRA_ARGS" not in _server_env(default_render)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_kthybrid_variable_the_chart_sets_is_one_the_launcher_reads(
    scenario_renders: dict[str, Rendered], scenario: str
) -> None:
    for where, spec in pod_specs(scenario_renders[scenario]):
        if where.startswith("Pod/"):
            continue  # the helm test pod runs its own script, not the launcher
        for c in spec.get("initContainers", []) + spec["containers"]:
            names = {e["name"] for e in c.get("env", []) if e["name"].startswith("KTHYBRID_")}
            assert names <= ENV_NAMES, f"{where} {c['name']}: {sorted(names - ENV_NAMES)}"


def _schema_at(path: str) -> dict[str, Any]:
    schema = json.loads(
        (Path(__file__).parents[2] / "helm/kthybrid/values.schema.json").read_text()
    )
    node: dict[str, Any] = schema
    for part in path.split("."):
        node = node["properties"][part]
    return node


def test_the_charts_option_values_are_the_launchers_options() -> None:
    """The copy of each option in the chart (its value path, its enum) is tied to settings.py."""
    from kthybrid_serve.settings import OPTIONS as LAUNCHER_OPTIONS

    in_chart = {o.spec.helm: o for o in LAUNCHER_OPTIONS if o.spec.helm}
    for path, _, variable, _ in OPTIONS:
        assert in_chart[path].env == variable, path
    for path, option in in_chart.items():
        node = _schema_at(path)
        if option.spec.choices:
            assert [c for c in node["enum"] if c is not None] == list(option.spec.choices), path
