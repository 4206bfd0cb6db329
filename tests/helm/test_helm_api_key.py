"""The API key: a Secret key mounted as a file that the launcher reads (KTHYBRID_API_KEY_FILE),
never a value in the pod spec; `helm test` authenticates with it."""

from __future__ import annotations

from typing import Any

import pytest
from helm_chart import Rendered, RenderError, container, env_of, server_pod_specs

KEY_FILE = "/run/secrets/kthybrid/api-key"


def _server(rendered: Rendered) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    return spec, container(spec, "server")


def _volume(spec: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(v for v in spec["volumes"] if v["name"] == name)
    return found


def test_the_server_reads_the_key_from_a_mounted_secret_file(default_render: Rendered) -> None:
    spec, server = _server(default_render)
    assert env_of(server)["KTHYBRID_API_KEY_FILE"] == KEY_FILE
    mount = next(m for m in server["volumeMounts"] if m["name"] == "api-key")
    assert mount == {"name": "api-key", "mountPath": "/run/secrets/kthybrid", "readOnly": True}
    assert _volume(spec, "api-key")["secret"] == {
        "secretName": "kthybrid-api-key",
        "defaultMode": 0o440,
        "items": [{"key": "api-key", "path": "api-key"}],
    }


@pytest.mark.parametrize("scenario", ["defaults", "leaderworkerset", "production"])
def test_no_container_gets_the_key_or_a_token_as_an_environment_value(
    scenario_renders: dict[str, Rendered], scenario: str
) -> None:
    for where, spec in server_pod_specs(scenario_renders[scenario]):
        for c in spec.get("initContainers", []) + spec["containers"]:
            for variable in c.get("env", []):
                assert "secretKeyRef" not in str(variable.get("valueFrom")), f"{where} {c['name']}"
                assert variable["name"] not in ("KTHYBRID_API_KEY", "HF_TOKEN"), where


def test_an_existing_secret_and_key_are_used(scenario_renders: dict[str, Rendered]) -> None:
    spec, _ = _server(scenario_renders["production"])
    assert _volume(spec, "api-key")["secret"]["secretName"] == "kthybrid-api-key"
    assert _volume(spec, "api-key")["secret"]["items"] == [{"key": "token", "path": "api-key"}]


def test_the_helm_test_pod_authenticates_with_the_same_key(default_render: Rendered) -> None:
    spec, _ = _server(default_render)
    pod = default_render.one("Pod")
    test = pod["spec"]["containers"][0]
    assert env_of(test)["KTHYBRID_API_KEY_FILE"] == KEY_FILE
    assert pod["spec"]["volumes"] == [_volume(spec, "api-key")]
    assert '"Authorization"] = "Bearer "' in test["command"][-1]


def test_turning_the_key_off_removes_the_file_and_the_variable(render: Any) -> None:
    rendered: Rendered = render(set_values=("apiKey.enabled=false",))
    spec, server = _server(rendered)
    assert "KTHYBRID_API_KEY_FILE" not in env_of(server)
    assert "api-key" not in {v["name"] for v in spec["volumes"]}
    assert "volumes" not in rendered.one("Pod")["spec"]


def test_a_secret_named_while_the_key_is_off_fails(render: Any) -> None:
    with pytest.raises(RenderError) as caught:
        render(set_values=("apiKey.enabled=false", "apiKey.existingSecret=my-key"))
    assert 'apiKey.existingSecret="my-key" is set but apiKey.enabled=false' in str(caught.value)


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_publishing_an_open_api_outside_the_cluster_fails(render: Any, service_type: str) -> None:
    with pytest.raises(RenderError) as caught:
        render(set_values=("apiKey.enabled=false", f"service.type={service_type}"))
    assert f"service.type={service_type} publishes the API outside the cluster" in str(caught.value)
