"""Every ci/ scenario renders objects that Kubernetes 1.33 and the CRDs accept, strictly."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from helm_chart import KUBERNETES_VERSION, SCENARIOS, SCHEMA_DIR, Rendered

CRD_SCHEMAS = {
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): "leaderworkerset-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-v1.json",
}


@cache
def _crd_validator(file_name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / file_name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _validate_kubernetes(obj: dict[str, Any], where: str) -> None:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = "/".join(str(p) for p in error.path)
        pytest.fail(f"{where} (Kubernetes {error.version}): {path}: {error.message}", pytrace=False)


def _as_pod_template(template: dict[str, Any], name: str) -> dict[str, Any]:
    """A LeaderWorkerSet pod template as a core/v1 PodTemplate, which Kubernetes' schema covers."""
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": name},
        "template": template,
    }


def _validate_document(doc: dict[str, Any]) -> None:
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    crd_schema = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if crd_schema is None:
        _validate_kubernetes(doc, where)
        return
    errors = sorted(_crd_validator(crd_schema).iter_errors(doc), key=str)
    assert not errors, f"{where}: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors
    )
    if doc["kind"] == "LeaderWorkerSet":
        lwt = doc["spec"]["leaderWorkerTemplate"]
        for role in ("leaderTemplate", "workerTemplate"):
            _validate_kubernetes(_as_pod_template(lwt[role], f"{role.lower()}"), f"{where} {role}")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_validates_strictly_against_kubernetes_1_33(
    scenario_renders: dict[str, Rendered], scenario: str
) -> None:
    rendered = scenario_renders[scenario]
    assert rendered.documents, f"{scenario} rendered nothing"
    for doc in rendered.documents:
        _validate_document(doc)


def test_crd_schemas_refuse_unknown_fields() -> None:
    lws = {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": "x"},
        "spec": {"leaderWorkerTemplate": {"workerTemplate": {"spec": {}}, "sise": 2}},
    }
    assert list(_crd_validator("leaderworkerset-v1.json").iter_errors(lws))
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "http", "interval": "30 seconds"}]},
    }
    assert list(_crd_validator("servicemonitor-v1.json").iter_errors(monitor))


def test_kubernetes_validation_is_strict() -> None:
    """The validator itself refuses an unknown field, so a pass above means something."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 1}], "selectr": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)
