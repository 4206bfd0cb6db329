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


def test_unknown_target_is_refused_by_the_schema_with_the_known_targets(render: Any) -> None:
    message = _error(render, "target=sm80")
    assert "/target" in message and "sm90" in message and "sm120" in message


def test_unknown_target_is_refused_by_the_chart_when_the_schema_is_skipped(render: Any) -> None:
    message = _error(render, "target=sm80", skip_schema=True)
    assert 'target "sm80" is not a kthybrid target: use one of sm100, sm120, sm89, sm90' in message


def test_hugepages_without_a_size_fail(render: Any) -> None:
    message = _error(render, "hugepages.enabled=true", "hostMemory.hugepagesGi=64")
    assert "hugepages.enabled=true needs hugepages.size: set it to 2Mi or 1Gi" in message


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
    ],
)
def test_schema_refuses_values_outside_the_contract(render: Any, assignment: str) -> None:
    assert "values don't meet the specifications of the schema" in _error(render, assignment)
