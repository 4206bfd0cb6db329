"""Impossible values fail to render, with a message that says what to change."""

from __future__ import annotations

from typing import Any

import pytest
from helm_chart import RenderError


def _error(render: Any, *set_values: str, skip_schema: bool = False) -> str:
    extra = ("--skip-schema-validation",) if skip_schema else ()
    with pytest.raises(RenderError) as caught:
        render(set_values=set_values, extra=extra)
    return str(caught.value)


def test_memory_limit_below_the_budget_fails_with_the_needed_amount(render: Any) -> None:
    message = _error(render, "hostMemory.limitGi=150")
    assert "hostMemory.limitGi=150 is below the host memory budget" in message
    assert "Raise hostMemory.limitGi to at least 200" in message


def test_budget_grown_past_an_explicit_limit_fails(render: Any) -> None:
    message = _error(render, "hostMemory.limitGi=200", "hostMemory.cpuExpertWeightsGi=300")
    assert "at least 356" in message


def test_a_target_that_is_no_name_is_refused_by_the_schema(render: Any) -> None:
    message = _error(render, "target=sm90\nhostNetwork: true")
    assert "/target" in message


def test_hugepages_without_a_size_fail(render: Any) -> None:
    message = _error(render, "hugepages.enabled=true", "hostMemory.hugepagesGi=64")
    assert "hugepages.enabled=true needs hugepages.size: set it to 2Mi" in message


def test_hugepages_without_an_amount_fail(render: Any) -> None:
    message = _error(render, "hugepages.enabled=true", "hugepages.size=2Mi")
    assert "needs hostMemory.hugepagesGi > 0" in message


def test_hugepages_amount_without_hugepages_enabled_fails(render: Any) -> None:
    message = _error(render, "hostMemory.hugepagesGi=64")
    assert "hostMemory.hugepagesGi=64 but hugepages.enabled=false" in message


def test_unsupported_hugepage_size_is_refused_by_the_schema(render: Any) -> None:
    message = _error(render, "hugepages.enabled=true", "hugepages.size=4Mi")
    assert "/hugepages/size" in message


def test_multi_node_with_a_read_write_once_claim_fails(render: Any) -> None:
    message = _error(render, "multiNode.enabled=true")
    assert "every node needs the model" in message and "models.source=hostPath" in message


def test_multi_node_group_of_one_fails(render: Any) -> None:
    message = _error(render, "multiNode.enabled=true", "multiNode.size=1")
    assert "needs at least 2 pods" in message


def test_conversion_without_a_weight_path_fails(render: Any) -> None:
    assert "convert.enabled=true needs kt.weightPath" in _error(render, "convert.enabled=true")


@pytest.mark.parametrize(
    "assignment",
    [
        "unknownKey=1",
        "hostMemory.extraGi=4",
        "resources.cpu=0",
        "kt.numaPolicy=spread",
        "capabilities.add={SYS_ADMIN}",
        "podSecurityContext.runAsUser=0",
        "server.port=0",
        "server.port=65536",
        "multiNode.distInitPort=65531",
        "server.memFractionStatic=1",
        "server.contextLength=0",
        "kt.weightPath=/elsewhere/weights",
        "kt.method=INT3",
        "image.digest=sha256:abc",
        "models.pvc.size=lots",
        "priorityClassName=Not_A_Name",
        "readiness.path=health",
        "hugepages.mountPath=relative/path",
        "apiKey.secretKey=a/b",
    ],
)
def test_schema_refuses_values_outside_the_contract(render: Any, assignment: str) -> None:
    assert "values don't meet the specifications of the schema" in _error(render, assignment)


def test_a_hostile_models_source_is_refused_by_the_chart_without_the_schema(render: Any) -> None:
    message = _error(render, "models.source=nfs", skip_schema=True)
    assert 'models.source="nfs" is not one of pvc, hostPath: pick one of them' in message


def test_a_hostile_hugepage_size_is_refused_by_the_chart_without_the_schema(render: Any) -> None:
    message = _error(
        render,
        "hugepages.enabled=true",
        "hostMemory.hugepagesGi=8",
        "hugepages.size=2Mi: x",
        skip_schema=True,
    )
    assert 'hugepages.size="2Mi: x" is not usable: set it to 2Mi' in message


@pytest.mark.parametrize("path", ["/tmp", "/cache", "/models", "/dev/shm", "/home/kthybrid/"])
def test_hugepages_on_a_path_the_server_already_mounts_fail(render: Any, path: str) -> None:
    message = _error(
        render,
        "hugepages.enabled=true",
        "hugepages.size=2Mi",
        "hostMemory.hugepagesGi=8",
        f"hugepages.mountPath={path}",
    )
    assert f'hugepages.mountPath="{path}" is already a mount of the server container' in message


def test_tp_size_not_divisible_by_the_group_fails(render: Any) -> None:
    message = _error(
        render,
        "multiNode.enabled=true",
        "models.source=hostPath",
        "cache.source=emptyDir",
        "multiNode.size=2",
        "resources.gpus=8",
        "server.tpSize=3",
    )
    assert "server.tpSize=3 is not divisible by the 2 pods of a group (multiNode.size)" in message


def test_tp_size_above_the_gpus_fails(render: Any) -> None:
    message = _error(render, "resources.gpus=1", "server.tpSize=2")
    assert "server.tpSize=2 needs more GPUs than the 1 the pods get" in message
