"""Issue 20 in the rendered manifests: the server reads /models read-only."""

from __future__ import annotations

import pytest
from helm_chart import SCENARIOS, Rendered, container, server_pod_specs


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_server_mounts_models_read_only(
    scenario_renders: dict[str, Rendered], scenario: str
) -> None:
    for where, spec in server_pod_specs(scenario_renders[scenario]):
        mounts = {m["mountPath"]: m for m in container(spec, "server")["volumeMounts"]}
        assert mounts["/models"].get("readOnly") is True, where
