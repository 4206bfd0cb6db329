"""Numbers render as plain integers at any size, from a values file as from --set.

Helm reads numbers in values files as floats, which print as 1.048576e+06 unless
the chart converts them; the launcher refuses that form.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart import Rendered, container, env_of

LARGE = {
    "server": {"contextLength": 1048576, "port": 65535},
    "hostMemory": {"limitGi": 1000000, "cpuExpertWeightsGi": 123456},
    "resources": {"cpu": 1000000, "ephemeralStorageGi": 2000000},
    "startup": {"deadlineSeconds": 10000000, "periodSeconds": 10},
    "shutdown": {"drainSeconds": 3000000},
    "kt": {"cpuinfer": 1000000, "numGpuExperts": 1000000},
    "replicaCount": 1000000,
    "helmTest": {"maxTokens": 1000000, "timeoutSeconds": 1000000},
}
EXPONENT = re.compile(r"\b\d(\.\d+)?e[+-]?\d+\b")


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory, render: Any) -> Rendered:
    values = tmp_path_factory.mktemp("numbers") / "large-values.yaml"
    values.write_text(yaml.safe_dump(LARGE))
    rendered: Rendered = render(values)
    return rendered


def test_no_number_renders_in_exponent_form(large: Rendered) -> None:
    found = EXPONENT.findall(large.text)
    assert not found, f"exponent form in the render: {sorted(set(found))}"


def test_context_length_reaches_the_launcher_as_digits(large: Rendered) -> None:
    env = env_of(container(large.one("Deployment")["spec"]["template"]["spec"], "server"))
    assert env["KTHYBRID_CONTEXT_LENGTH"] == "1048576"
    assert env["KTHYBRID_KT_CPUINFER"] == "1000000"
    assert env["KTHYBRID_KT_NUM_GPU_EXPERTS"] == "1000000"
    assert env["KTHYBRID_PORT"] == "65535"


def test_a_million_gib_limit_is_a_million_gib(large: Rendered) -> None:
    server = container(large.one("Deployment")["spec"]["template"]["spec"], "server")
    assert server["resources"]["limits"]["memory"] == "1000000Gi"
    assert server["resources"]["limits"]["cpu"] == "1000000"
    assert server["resources"]["limits"]["ephemeral-storage"] == "2000000Gi"


def test_derived_numbers_stay_integers(large: Rendered) -> None:
    deployment = large.one("Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1000000
    assert container(spec, "server")["startupProbe"]["failureThreshold"] == 1000000
    # drainSeconds + 10 s per 100 GiB of the budget (123456 + 8 + 16 + 32 GiB)
    assert spec["terminationGracePeriodSeconds"] == 3000000 + 10 * 1236
    test_env = env_of(large.one("Pod")["spec"]["containers"][0])
    assert (test_env["MAX_TOKENS"], test_env["TIMEOUT"]) == ("1000000", "1000000")


def test_a_limit_below_a_large_budget_is_compared_as_integers(render: Any, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"hostMemory": {"cpuExpertWeightsGi": 2000000}}))
    rendered: Rendered = render(values)
    server = container(rendered.one("Deployment")["spec"]["template"]["spec"], "server")
    assert server["resources"]["limits"]["memory"] == "2000056Gi"
