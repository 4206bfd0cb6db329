"""Launcher options: unset or null leaves the variable out (the launcher's default);
a set value reaches KTHYBRID_* unchanged; extra arguments travel as a JSON array."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart import SCENARIOS, Rendered, container, env_of, pod_specs
from kthybrid_serve.parsers import Choice, IntRange, OpenInterval
from kthybrid_serve.settings import ENV_NAMES

from builder.chart import ChartOption, chart_options


def _sample(option: ChartOption) -> tuple[Any, str]:
    """A value inside the launcher's range for the option, and how its variable spells it."""
    parse = option.parse
    if isinstance(parse, IntRange):
        return parse.low, str(parse.low)
    if isinstance(parse, OpenInterval):
        middle = (parse.low + parse.high) / 2
        return middle, str(middle)
    if isinstance(parse, Choice):
        return parse.choices[-1], parse.choices[-1]
    if option.default is None or isinstance(option.default, str):
        return "/models/w", "/models/w"
    assert isinstance(option.default, bool), f"{option.path}: add a sample for its type"
    return not option.default, str(not option.default).lower()


# Every option the chart passes through (the render gives each its variable), except extra
# arguments: a list, tested below.
OPTIONS = [
    (o.path, *_sample(o)[:1], o.env, _sample(o)[1])
    for o in chart_options()
    if not o.owned and o.default != ()
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


def test_the_sampled_options_cover_every_passed_through_variable() -> None:
    assert len(OPTIONS) >= 10
