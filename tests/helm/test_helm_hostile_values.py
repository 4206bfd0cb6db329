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
import shlex
import subprocess
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
# Values the templates check against a rule of their own (Kubernetes' Secret key rule): every
# payload there is refused with the chart's message (test_a_hostile_secret_key_is_refused...).
CHECKED = {("apiKey", "secretKey"), ("hfToken", "secretKey")}
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
    elif isinstance(node, str) and node and path not in CHOICES | CHECKED:
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
    choices = {".".join(str(s) for s in c) for c in CHOICES | CHECKED}
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


# Issue 20: values that would turn the API key off, put it on a command line, mount a system
# path of the node, or break out of a NOTES shell line. Each is refused by the schema and, with
# the schema skipped, by the templates with the chart's own message.

RESERVED_ENV = [
    "KTHYBRID_API_KEY_FILE",
    "KTHYBRID_MODEL",
    "KTHYBRID_HOST",
    "KTHYBRID_PORT",
    "KTHYBRID_HUGEPAGES",
    "KTHYBRID_EXTRA_ARGS",
    "KTHYBRID_NNODES",
    "KTHYBRID_NODE_RANK",
    "KTHYBRID_DIST_INIT_ADDR",
    "HF_HUB_OFFLINE",
]
BOTH = pytest.mark.parametrize("extra", [(), ("--skip-schema-validation",)], ids=["schema", "bare"])


def _refusal(render: Any, tmp_path: Path, values: dict[str, Any], extra: tuple[str, ...]) -> str:
    hostile = tmp_path / "hostile-values.yaml"
    hostile.write_text(_as_values_file(values))
    with pytest.raises(RenderError) as caught:
        render(hostile, extra=extra)
    return str(caught.value)


@BOTH
@pytest.mark.parametrize("name", RESERVED_ENV)
def test_extra_env_may_not_redefine_a_variable_the_chart_sets(
    render: Any, tmp_path: Path, name: str, extra: tuple[str, ...]
) -> None:
    values = {"server": {"extraEnv": [{"name": "OK", "value": "1"}, {"name": name, "value": ""}]}}
    message = _refusal(render, tmp_path, values, extra)
    assert f'server.extraEnv[1].name="{name}" is a variable the chart sets itself' in message


@BOTH
def test_extra_env_may_not_redefine_a_launcher_option_the_chart_sets(
    render: Any, tmp_path: Path, extra: tuple[str, ...]
) -> None:
    # server.tpSize set: the chart writes KTHYBRID_TP_SIZE, so extraEnv may not override it.
    values = {
        "server": {"tpSize": 1, "extraEnv": [{"name": "KTHYBRID_TP_SIZE", "value": "64"}]},
    }
    message = _refusal(render, tmp_path, values, extra)
    assert 'server.extraEnv[0].name="KTHYBRID_TP_SIZE" is a variable the chart sets' in message


def test_the_api_key_file_variable_stays_the_charts(render: Any) -> None:
    """With apiKey.enabled the server's environment holds exactly one KTHYBRID_API_KEY_FILE."""
    rendered = render(CHART_DIR / "values.yaml")
    for doc in rendered.of_kind("Deployment"):
        env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
        names = [e["name"] for e in env]
        assert names.count("KTHYBRID_API_KEY_FILE") == 1
        assert len(names) == len(set(names))


@BOTH
@pytest.mark.parametrize(
    "args",
    [
        ["--api-key", "secret"],
        ["--api-key=secret"],
        ["--log-level", "info", "--api-k", "secret"],
        ["--api=secret"],
        ["--admin-api-key", "secret"],
        ["--admin-api=secret"],
    ],
)
def test_extra_args_may_not_carry_an_api_key(
    render: Any, tmp_path: Path, args: list[str], extra: tuple[str, ...]
) -> None:
    message = _refusal(render, tmp_path, {"server": {"extraArgs": args}}, extra)
    assert "passes an API key on the command line" in message
    assert "apiKey.existingSecret" in message


@BOTH
@pytest.mark.parametrize("volume", ["models", "cache"])
@pytest.mark.parametrize(
    "path",
    [
        "/",
        "//",
        "/proc",
        "/proc/1/root",
        "/sys/fs/cgroup",
        "/dev",
        "/etc/kubernetes",
        "/var/lib/kubelet",
        "/var/lib/kubelet/pods",
        "/run/containerd",
        "/var/run/docker.sock",
        "/data/../etc",
        "/var/lib/kthybrid/..",
    ],
)
def test_a_host_path_on_a_system_path_is_refused(
    render: Any, tmp_path: Path, volume: str, path: str, extra: tuple[str, ...]
) -> None:
    values = {volume: {"source": "hostPath", "hostPath": {"path": path}}}
    message = _refusal(render, tmp_path, values, extra)
    if extra:
        assert f"{volume}.hostPath.path={json.dumps(path)}" in message
        assert "mount a directory of its own" in message
    else:
        assert f"at '/{volume}/hostPath/path'" in message


@BOTH
@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/run",
        "/run/secrets",
        "/home",
        "/proc/huge",
        "/sys/x",
        "/etc/huge",
        "/usr/huge",
        "/opt",
        "/dev",
        "/tmp/huge",
        "/models/huge",
        "/var/lib/kubelet/huge",
        "/mnt/../run",
    ],
)
def test_a_hugepages_mount_path_on_a_mount_or_a_system_path_is_refused(
    render: Any, tmp_path: Path, path: str, extra: tuple[str, ...]
) -> None:
    values = {
        "hugepages": {"enabled": True, "size": "2Mi", "mountPath": path},
        "hostMemory": {"hugepagesGi": 8},
    }
    message = _refusal(render, tmp_path, values, extra)
    assert f"hugepages.mountPath={json.dumps(path)}" in message
    assert "use a path of its own" in message


@BOTH
@pytest.mark.parametrize("key", ["apiKey", "hfToken"])
@pytest.mark.parametrize("value", [".", "..", "a/b", "x\nhostNetwork: true", "a" * 254])
def test_a_secret_key_outside_kubernetes_rule_is_refused(
    render: Any, tmp_path: Path, key: str, value: str, extra: tuple[str, ...]
) -> None:
    values: dict[str, Any] = {key: {"secretKey": value}}
    if key == "hfToken":
        values[key]["secretName"] = "hf"
    message = _refusal(render, tmp_path, values, extra)
    if extra:
        assert f"{key}.secretKey={json.dumps(value)} is not a Secret key" in message
    else:
        assert f"at '/{key}/secretKey'" in message


@pytest.mark.parametrize(
    "payload", PAYLOADS[:-2], ids=[f"payload{i}" for i in range(len(PAYLOADS) - 2)]
)
def test_notes_paste_a_hostile_model_name_as_one_shell_word(
    helm: Path, tmp_path: Path, payload: str
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        _as_values_file({"server": {"model": "/models/" + payload.replace("/", "_")}})
    )
    result = subprocess.run(
        [
            str(helm),
            "install",
            "k",
            str(CHART_DIR),
            "--namespace",
            "serving",
            "--dry-run=client",
            "--skip-schema-validation",
            "--values",
            str(values),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    lexer = shlex.shlex(notes.split(" -d ", 1)[1], posix=True)
    lexer.whitespace_split = True
    body = json.loads(lexer.get_token() or "")
    assert body["model"] == payload.replace("/", "_")
    for line in notes.splitlines():
        if line.strip().startswith(("kubectl", "helm test")):
            words = shlex.split(line)
            assert words[words.index("--namespace") + 1] == "serving", line
