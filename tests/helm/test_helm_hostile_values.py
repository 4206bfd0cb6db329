"""Hostile strings in every string value cannot bend the manifests.

Each ci/ scenario is rendered again with every non-empty string of its values (map values,
list items, nested objects such as tolerations) replaced by one hostile payload: a newline
followed by YAML keys, template text, flow mappings, anchors, YAML 1.1 scalars, very long
strings. With the schema skipped (the templates alone must hold) the parsed manifests must
have exactly the shape of the scenario's golden render: the same documents, keys and list
lengths, scalars of the same types; no hostNetwork, no hostPID, no extra probe or volume key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart import (
    CHART_DIR,
    GOLDEN_DIR,
    SCENARIOS,
    Rendered,
    RenderError,
    merged_values,
    scalars,
    scenario_file,
    shape,
)

PAYLOADS = [
    "x\nhostNetwork: true",
    "x\n  hostNetwork: true\n  hostPID: true",
    "x\n    host: evil.example.com",
    "x\n      optional: true",
    "x\n  volumeName: pv-evil",
    "x\n        livenessProbe:\n          exec:\n            command: [sh]",
    "x\r\nhostIPC: true",
    "x\n---\napiVersion: v1\nkind: Pod",
    "---",
    "...",
    "{{ .Release.Name }}",
    '{{ fail "boom" }}',
    "{{- /* */ -}}",
    "{hostNetwork: true}",
    "[hostNetwork, true]",
    "&anchor x",
    "*anchor",
    "<<: *anchor",
    "!!binary aGVsbG8=",
    "!!python/object:os.system ls",
    "key: value",
    "- item",
    "# comment",
    "|\n  literal",
    ">-\n  folded",
    "'single' \"double\" `back`",
    "true",
    "null",
    "~",
    "0x1F",
    "1e3",
    "yes",
    "%s %v %!(EXTRA)",
    "$(LWS_LEADER_ADDRESS)",
    "\t tab\x0bvertical\x0cform",
    "\x00nul",
    "\u2028line separator\u0085next line",
    "\u202eright-to-left override",
    "a" * 10_000,
    ("x\nhostNetwork: true\n" * 2_000),
]
# Values that choose which objects and keys exist: the chart refuses any other value with its
# own message (tested in test_helm_bad_values.py), so they are not replaced here.
CHOICES = {("target",), ("models", "source"), ("cache", "source"), ("hugepages", "size")}
FORBIDDEN_KEYS = {"hostNetwork", "hostPID", "hostIPC", "host", "optional", "volumeName"}

Path_ = tuple[str | int, ...]


def string_leaves(node: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Paths of every non-empty string in a values tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from string_leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from string_leaves(item, (*path, index))
    elif isinstance(node, str) and node and path not in CHOICES:
        yield path


def replaced(values: dict[str, Any], paths: list[Path_], payload: str) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(values))
    for path in paths:
        node: Any = copy
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = payload
    return copy


def _as_values_file(values: dict[str, Any]) -> str:
    """JSON, which YAML readers take as it is: every string stays quoted, so no YAML dialect
    reads "1e3" or "yes" as a number or a bool on the way in."""
    return json.dumps(values)


def keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from keys(item)


def golden_documents(scenario: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((GOLDEN_DIR / f"{scenario}.yaml").read_text()) if d]


def schema_path(path: Path_) -> str:
    """A values path as the schema names it: list items as [], keys of maps as *."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    node: Any = schema
    parts: list[str] = []
    for step in path:
        if isinstance(step, int):
            node = node.get("items", {}) if isinstance(node, dict) else {}
            parts.append("[]")
        elif isinstance(node, dict) and step in node.get("properties", {}):
            node = node["properties"][step]
            parts.append(str(step))
        else:
            node = node.get("additionalProperties", {}) if isinstance(node, dict) else {}
            parts.append("*")
    return ".".join(parts).replace(".[]", "[]")


def _scenario_leaves() -> dict[str, list[Path_]]:
    return {s: list(string_leaves(merged_values(scenario_file(s)))) for s in SCENARIOS}


LEAVES = _scenario_leaves()


def test_at_least_thirty_hostile_payloads() -> None:
    assert len(set(PAYLOADS)) >= 30


def test_the_scenarios_set_every_string_value_of_the_schema() -> None:
    """Every string the schema allows is non-empty in some scenario, so each one is attacked."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())

    def declared(node: Any, prefix: str) -> Iterator[str]:
        types = node.get("type")
        is_string = types == "string" or (isinstance(types, list) and "string" in types)
        if is_string or any(isinstance(v, str) for v in node.get("enum", [])):
            yield prefix
        for key, child in node.get("properties", {}).items():
            yield from declared(child, f"{prefix}.{key}" if prefix else key)
        if isinstance(node.get("items"), dict):
            yield from declared(node["items"], f"{prefix}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from declared(node["additionalProperties"], f"{prefix}.*")

    attacked = {schema_path(path) for leaves in LEAVES.values() for path in leaves}
    choices = {".".join(str(s) for s in c) for c in CHOICES}
    missing = sorted(set(declared(schema, "")) - attacked - choices)
    assert not missing, f"no ci/ scenario sets these string values: {missing}"


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("payload", PAYLOADS, ids=[f"payload{i}" for i in range(len(PAYLOADS))])
def test_hostile_strings_keep_the_golden_shape(
    render: Any, tmp_path: Path, scenario: str, payload: str
) -> None:
    values = merged_values(scenario_file(scenario))
    hostile = tmp_path / "hostile-values.yaml"
    hostile.write_text(_as_values_file(replaced(values, LEAVES[scenario], payload)))
    rendered: Rendered = render(hostile, extra=("--skip-schema-validation",))
    golden = golden_documents(scenario)
    assert [shape(d) for d in rendered.documents] == [shape(d) for d in golden]
    assert not FORBIDDEN_KEYS & set(keys(rendered.documents))
    # The value arrived whole (quoted, not dropped or re-parsed): the test prompt carries it.
    assert payload in set(scalars(rendered.documents))


@pytest.mark.parametrize("payload", PAYLOADS, ids=[f"payload{i}" for i in range(len(PAYLOADS))])
def test_hostile_strings_the_schema_lets_through_keep_the_golden_shape(
    render: Any, tmp_path: Path, payload: str
) -> None:
    """With the schema on, free-form strings (no pattern or enum) cannot bend a manifest either."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    scenario = "production"
    free = [p for p in LEAVES[scenario] if _free_form(schema, p)]
    assert free, "production sets no free-form string"
    values = merged_values(scenario_file(scenario))
    hostile = tmp_path / "hostile-values.yaml"
    hostile.write_text(_as_values_file(replaced(values, free, payload)))
    try:
        rendered: Rendered = render(hostile)
    except RenderError as error:
        # Only a length limit may refuse a free-form string.
        assert "maxLength" in str(error) or "length must be" in str(error), str(error)
        return
    assert [shape(d) for d in rendered.documents] == [shape(d) for d in golden_documents(scenario)]


def _schema_node(schema: dict[str, Any], path: Path_) -> dict[str, Any]:
    node: Any = schema
    for step in path:
        if isinstance(step, int):
            node = node.get("items", {})
        elif step in node.get("properties", {}):
            node = node["properties"][step]
        else:
            extra = node.get("additionalProperties", {})
            node = extra if isinstance(extra, dict) else {}
    return node if isinstance(node, dict) else {}


def _free_form(schema: dict[str, Any], path: Path_) -> bool:
    node = _schema_node(schema, path)
    return "pattern" not in node and "enum" not in node


def _constrained_paths() -> list[Path_]:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    paths = {p for leaves in LEAVES.values() for p in leaves if not _free_form(schema, p)}
    return sorted(paths, key=str)


@pytest.mark.parametrize("path", _constrained_paths(), ids=lambda p: ".".join(map(str, p)))
def test_the_schema_refuses_a_newline_and_keys_in_a_constrained_string(
    render: Any, tmp_path: Path, path: Path_
) -> None:
    scenario = next(s for s in SCENARIOS if path in LEAVES[s])
    values = merged_values(scenario_file(scenario))
    hostile = tmp_path / "hostile-values.yaml"
    hostile.write_text(_as_values_file(replaced(values, [path], "x\nhostNetwork: true")))
    with pytest.raises(RenderError) as caught:
        render(hostile)
    # A JSON pointer, as helm reports it: "~" is written "~0" and "/" is written "~1".
    where = "".join("/" + str(step).replace("~", "~0").replace("/", "~1") for step in path)
    assert "values don't meet the specifications of the schema" in str(caught.value)
    assert f"at '{where}'" in str(caught.value)
