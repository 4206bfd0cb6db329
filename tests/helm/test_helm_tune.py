"""tune.enabled: `kthybrid-serve tune` runs in an init container before every server pod."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from helm_chart import Rendered, container, env_of, scenario_file, server_pod_specs


def test_no_tuning_unless_asked(default_render: Rendered) -> None:
    for where, spec in server_pod_specs(default_render):
        names = [c["name"] for c in spec.get("initContainers", [])]
        assert "tune" not in names, where


def test_tuning_runs_before_the_server_with_its_options_and_limits(
    render: Callable[..., Rendered],
) -> None:
    renders = [render(set_values=("tune.enabled=true",))] + [
        render(scenario_file(scenario), set_values=("tune.enabled=true",))
        for scenario in ("leaderworkerset", "production", "hugepages")
    ]
    for rendered in renders:
        for where, spec in server_pod_specs(rendered):
            tune, server = container(spec, "tune"), container(spec, "server")
            assert spec["initContainers"][-1]["name"] == "tune", where
            assert tune["args"] == ["tune"]
            assert tune["image"] == server["image"]
            # The record matches only the plan the server makes with the same options.
            assert env_of(tune) == env_of(server), where
            assert tune["resources"] == server["resources"]
            assert tune["securityContext"] == server["securityContext"]


def test_tuning_writes_the_record_to_the_servers_cache(render: Callable[..., Rendered]) -> None:
    for where, spec in server_pod_specs(render(set_values=("tune.enabled=true",))):
        mounts: dict[str, Any] = {m["name"]: m for m in container(spec, "tune")["volumeMounts"]}
        served = {m["name"]: m for m in container(spec, "server")["volumeMounts"]}
        assert mounts["cache"]["mountPath"] == served["cache"]["mountPath"] == "/cache", where
        assert mounts["models"]["readOnly"] is True
