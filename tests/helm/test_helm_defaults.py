"""What `helm install kthybrid ./helm/kthybrid` gets without any values."""

from __future__ import annotations

import re
from typing import Any

import pytest
from helm_chart import (
    REPO_ROOT,
    SCENARIOS,
    Rendered,
    container,
    env_of,
    pod_specs,
    server_pod_specs,
)

GI = 1024**3
IMAGE_HOME = "/home/kthybrid"
UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": GI, "Ti": 1024**4}


def _bytes(quantity: str) -> int:
    for suffix, factor in UNITS.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


def _all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec["containers"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_is_guaranteed_qos(scenario_renders: dict[str, Rendered], scenario: str) -> None:
    for where, spec in pod_specs(scenario_renders[scenario]):
        for c in _all_containers(spec):
            resources = c["resources"]
            assert resources["requests"] == resources["limits"], f"{where} {c['name']}"
            assert {"cpu", "memory"} <= resources["limits"].keys(), f"{where} {c['name']}"


def test_server_asks_for_whole_cpus(default_render: Rendered) -> None:
    spec = default_render.one("Deployment")["spec"]["template"]["spec"]
    cpu = container(spec, "server")["resources"]["limits"]["cpu"]
    assert cpu.isdigit() and int(cpu) >= 1


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_container_runs_as_uid_10000_read_only_and_drops_all_capabilities(
    scenario_renders: dict[str, Rendered], scenario: str
) -> None:
    for where, spec in pod_specs(scenario_renders[scenario]):
        pod_context = spec["securityContext"]
        assert pod_context["runAsNonRoot"] is True, where
        ids = (pod_context["runAsUser"], pod_context["runAsGroup"], pod_context["fsGroup"])
        assert ids == (10000, 10000, 10000), where
        assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in _all_containers(spec):
            context = c["securityContext"]
            assert context["privileged"] is False, f"{where} {c['name']}"
            assert context["allowPrivilegeEscalation"] is False, f"{where} {c['name']}"
            assert context["readOnlyRootFilesystem"] is True, f"{where} {c['name']}"
            assert context["capabilities"]["drop"] == ["ALL"], f"{where} {c['name']}"
            assert set(context["capabilities"].get("add", [])) <= {"SYS_NICE", "IPC_LOCK"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_containers_that_write_get_tmp_home_and_cache_as_volumes(
    scenario_renders: dict[str, Rendered], scenario: str
) -> None:
    for where, spec in pod_specs(scenario_renders[scenario]):
        volumes = {v["name"]: v for v in spec["volumes"]} if "volumes" in spec else {}
        for c in _all_containers(spec):
            if c["name"] not in ("server", "download-model", "convert"):
                continue
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts["/tmp"] == "tmp" and mounts[IMAGE_HOME] == "home", f"{where} {c['name']}"
            assert mounts["/cache"] == "cache", f"{where} {c['name']}"
            assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}, where
            assert volumes["home"] == {"name": "home", "emptyDir": {}}, where


def test_the_home_volume_is_the_images_home() -> None:
    """The chart mounts HOME where the image says it is (the image's ENV HOME)."""
    template = (REPO_ROOT / "docker" / "templates" / "Dockerfile.j2").read_text()
    homes = set(re.findall(r"\bHOME=(\S+)", template))
    assert homes == {IMAGE_HOME}


def test_server_adds_back_only_sys_nice_and_ipc_lock(default_render: Rendered) -> None:
    spec = default_render.one("Deployment")["spec"]["template"]["spec"]
    assert container(spec, "server")["securityContext"]["capabilities"]["add"] == [
        "SYS_NICE",
        "IPC_LOCK",
    ]


def test_startup_probe_allows_at_least_ten_minutes(default_render: Rendered) -> None:
    spec = default_render.one("Deployment")["spec"]["template"]["spec"]
    probe = container(spec, "server")["startupProbe"]
    assert probe["httpGet"]["path"] == "/health"
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 600


def test_startup_failure_threshold_is_derived_from_the_deadline(render: Any) -> None:
    rendered = render(set_values=("startup.deadlineSeconds=601", "startup.periodSeconds=20"))
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert container(spec, "server")["startupProbe"]["failureThreshold"] == 31  # ceil(601/20)


def test_readiness_generates_and_liveness_is_lenient(default_render: Rendered) -> None:
    server = container(default_render.one("Deployment")["spec"]["template"]["spec"], "server")
    assert server["readinessProbe"]["httpGet"]["path"] == "/health_generate"
    liveness = server["livenessProbe"]
    assert liveness["httpGet"]["path"] == "/health"
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 120


def test_grace_period_follows_the_documented_formula(default_render: Rendered) -> None:
    spec = default_render.one("Deployment")["spec"]["template"]["spec"]
    # drainSeconds 60 + releaseSecondsPer100Gi 10 * ceil(200 GiB / 100)
    assert spec["terminationGracePeriodSeconds"] == 80


def test_deployment_recreates_instead_of_rolling(default_render: Rendered) -> None:
    assert default_render.one("Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_memory_limit_is_the_budget_and_counts_shm(default_render: Rendered) -> None:
    spec = default_render.one("Deployment")["spec"]["template"]["spec"]
    limit = _bytes(container(spec, "server")["resources"]["limits"]["memory"])
    shm = next(v for v in spec["volumes"] if v["name"] == "shm")["emptyDir"]
    assert shm["medium"] == "Memory"
    assert limit == (144 + 8 + 16 + 32) * GI
    assert _bytes(shm["sizeLimit"]) == 16 * GI and _bytes(shm["sizeLimit"]) < limit


def test_server_runs_offline_with_models_and_cache_mounted(default_render: Rendered) -> None:
    spec = default_render.one("Deployment")["spec"]["template"]["spec"]
    server = container(spec, "server")
    assert env_of(server)["HF_HUB_OFFLINE"] == "1"
    assert env_of(server)["KTHYBRID_MODEL"] == "/models/DeepSeek-V4-Flash"
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    assert mounts["/models"] == "models" and mounts["/cache"] == "cache"
    assert mounts["/dev/shm"] == "shm"
    assert spec["enableServiceLinks"] is False, "a Service named kthybrid would set KTHYBRID_PORT"


def test_download_skips_when_the_marker_exists(default_render: Rendered) -> None:
    spec = default_render.one("Deployment")["spec"]["template"]["spec"]
    download = container(spec, "download-model")
    script = download["command"][-1]
    assert env_of(download)["MARKER"] == "/models/DeepSeek-V4-Flash/.kthybrid-download-complete"
    assert 'if [ -f "$MARKER" ]' in script and script.rstrip().endswith('touch "$MARKER"')
    assert "--local-dir" in script and "HF_HUB_OFFLINE" not in env_of(download)


def test_image_tag_is_app_version_cuda_and_target(default_render: Rendered) -> None:
    for where, spec in pod_specs(default_render):
        for c in _all_containers(spec):
            assert c["image"] == "kthybrid:0.7.2-cu128-sm90", f"{where} {c['name']}"
            assert c["imagePullPolicy"] == "IfNotPresent"


def test_hugepages_are_off_by_default(default_render: Rendered) -> None:
    for _, spec in server_pod_specs(default_render):
        limits = container(spec, "server")["resources"]["limits"]
        assert not [k for k in limits if k.startswith("hugepages-")]
        assert env_of(container(spec, "server"))["KTHYBRID_HUGEPAGES"] == "false"


def test_hugepages_scenario_requests_pages_and_mounts_them(
    scenario_renders: dict[str, Rendered],
) -> None:
    spec = scenario_renders["hugepages"].one("Deployment")["spec"]["template"]["spec"]
    server = container(spec, "server")
    assert server["resources"]["limits"]["hugepages-2Mi"] == "200Gi"
    assert server["resources"]["limits"]["memory"] == "64Gi"
    volume = next(v for v in spec["volumes"] if v["name"] == "hugepages")
    assert volume["emptyDir"] == {"medium": "HugePages-2Mi"}
    assert {"name": "hugepages", "mountPath": "/dev/hugepages"} in server["volumeMounts"]
    assert env_of(server)["KTHYBRID_HUGEPAGES"] == "true"


def test_helm_test_pod_sends_a_chat_completion(default_render: Rendered) -> None:
    pod = default_render.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    test = pod["spec"]["containers"][0]
    assert "/v1/chat/completions" in test["command"][-1]
    assert env_of(test)["KTHYBRID_URL"] == "http://kthybrid.serving.svc:30000"


def test_existing_claims_are_used_and_none_created(scenario_renders: dict[str, Rendered]) -> None:
    rendered = scenario_renders["existing-pvc"]
    assert not rendered.of_kind("PersistentVolumeClaim")
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"models": "deepseek-v4-flash-weights", "cache": "kthybrid-jit-cache"}
    assert not spec.get("initContainers")


def test_launcher_options_are_left_to_the_launcher_by_default(default_render: Rendered) -> None:
    spec = default_render.one("Deployment")["spec"]["template"]["spec"]
    env = env_of(container(spec, "server"))
    planned = {
        "KTHYBRID_CONTEXT_LENGTH",
        "KTHYBRID_MEM_FRACTION_STATIC",
        "KTHYBRID_TP_SIZE",
        "KTHYBRID_MTP",
        "KTHYBRID_TRUST_REMOTE_CODE",
        "KTHYBRID_KT_WEIGHT_PATH",
        "KTHYBRID_KT_METHOD",
        "KTHYBRID_KT_CPUINFER",
        "KTHYBRID_KT_NUM_GPU_EXPERTS",
        "KTHYBRID_NUMA_POLICY",
        "KTHYBRID_EXTRA_ARGS",
    }
    assert not planned & env.keys()


def test_network_policy_is_on_and_admits_only_the_documented_clients(
    default_render: Rendered,
) -> None:
    policy = default_render.one("NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = policy["spec"]["ingress"]
    assert all(rule["ports"] == [{"port": "http", "protocol": "TCP"}] for rule in rules)
    peers = [peer for rule in rules for peer in rule["from"]]
    assert {"podSelector": {"matchLabels": {"kthybrid.io/client": "true"}}} in peers
    test_pod_labels = default_render.one("Pod")["metadata"]["labels"]
    helm_test_peer = peers[-1]["podSelector"]["matchLabels"]
    assert helm_test_peer.items() <= test_pod_labels.items()
    selected = policy["spec"]["podSelector"]["matchLabels"]
    server_labels = default_render.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selected.items() <= server_labels.items()
