"""Least privilege as `docker compose config` resolves it: every service runs as UID/GID 10000
with a read-only root filesystem, no new privileges and no capability beyond what it needs;
the API key is a secret file; launcher defaults are the launcher's, not restated here."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kthybrid_serve.settings import ENV_NAMES

from tests.support.compose_project import COMPOSE_DIR, LAYERS, PROFILES, ComposeProject, env_example

Compose = Callable[..., ComposeProject]
HOME = "/home/kthybrid"
HOST_MEMORY_SERVICES = {"server", "server-mtp", "convert"}
KEY_CLIENTS = {"server", "server-mtp", "chat", "bench-serve"}
KEY_FILE = "/run/secrets/kthybrid-api-key"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """Every service of every profile, resolved once from .env.example's settings."""
    with tempfile.TemporaryDirectory() as tmp:
        project = ComposeProject(env_dir=Path(tmp))
        project.set(MODELS_DIR=tmp)
        found: dict[str, Any] = project.config(PROFILES)["services"]
    return found


@pytest.mark.parametrize("layer", ["compose.yaml", *(f"compose.yaml:{x}" for x in LAYERS)])
def test_every_service_of_every_layer_is_locked_down(compose: Compose, layer: str) -> None:
    project = compose(COMPOSE_FILE=layer, GPU_DEVICE_IDS="0")
    for name, service in project.config(PROFILES)["services"].items():
        assert service["user"] == "10000:10000", name
        assert service["read_only"] is True, name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["cap_drop"] == ["ALL"], name
        assert not service.get("privileged"), name
        expected_caps = ["SYS_NICE", "IPC_LOCK"] if name in HOST_MEMORY_SERVICES else None
        assert service.get("cap_add") == expected_caps, name


@pytest.mark.parametrize(
    "name", ["server", "server-mtp", "download", "convert", "chat", "bench-serve"]
)
def test_writes_go_to_tmpfs_volumes_or_models(services: dict[str, Any], name: str) -> None:
    service = services[name]
    tmpfs = {entry.split(":", 1)[0]: entry.split(":", 1)[1] for entry in service["tmpfs"]}
    assert set(tmpfs) == {"/tmp", HOME}
    assert "uid=10000,gid=10000,mode=0700" in tmpfs[HOME]
    assert "mode=1777" in tmpfs["/tmp"]
    # JIT compilers (torch inductor, triton) load the shared objects they build there.
    assert all("exec" in options.split(",") for options in tmpfs.values())


@pytest.mark.parametrize("name", sorted(KEY_CLIENTS))
def test_the_api_key_is_a_secret_file(services: dict[str, Any], name: str) -> None:
    service = services[name]
    assert service["secrets"] == [{"source": "kthybrid-api-key", "target": "kthybrid-api-key"}]
    assert service["environment"]["KTHYBRID_API_KEY_FILE"] == KEY_FILE
    assert not [k for k in service["environment"] if k.endswith("API_KEY")]


def test_the_api_key_file_comes_from_the_setting(compose: Compose) -> None:
    config = compose(API_KEY_FILE="/etc/kthybrid/key").config(["serve"])
    assert config["secrets"]["kthybrid-api-key"]["file"] == "/etc/kthybrid/key"


def test_the_default_api_key_file_is_next_to_compose_yaml(compose: Compose) -> None:
    assert env_example()["API_KEY_FILE"] == "./api-key"
    project = compose()
    project.settings.pop("API_KEY_FILE")
    assert project.config(["serve"])["secrets"]["kthybrid-api-key"]["file"] == str(
        COMPOSE_DIR / "api-key"
    )


def test_services_without_the_api_need_no_key(services: dict[str, Any]) -> None:
    assert "secrets" not in services["convert"]
    assert [s["source"] for s in services["download"]["secrets"]] == ["hf_token"]


LAUNCHER_OPTIONS = {
    "KTHYBRID_KT_WEIGHT_PATH",
    "KTHYBRID_KT_METHOD",
    "KTHYBRID_KT_CPUINFER",
    "KTHYBRID_KT_THREADPOOL_COUNT",
    "KTHYBRID_KT_NUM_GPU_EXPERTS",
    "KTHYBRID_NUMA_POLICY",
    "KTHYBRID_MTP",
    "KTHYBRID_CONTEXT_LENGTH",
    "KTHYBRID_MEM_FRACTION_STATIC",
    "KTHYBRID_HUGEPAGES",
    "KTHYBRID_GPU",
    "KTHYBRID_TP_SIZE",
    "KTHYBRID_TRUST_REMOTE_CODE",
    "KTHYBRID_EXTRA_ARGS",
}


def test_launcher_defaults_are_left_to_the_launcher(services: dict[str, Any]) -> None:
    env = services["server"]["environment"]
    assert env.keys() >= LAUNCHER_OPTIONS
    assert {k: env[k] for k in LAUNCHER_OPTIONS if env[k] != ""} == {}


def test_remote_code_is_off_unless_asked_for(compose: Compose) -> None:
    default = compose().config(["serve"])["services"]["server"]["environment"]
    assert default["KTHYBRID_TRUST_REMOTE_CODE"] == ""
    asked = compose(KTHYBRID_TRUST_REMOTE_CODE="true").config(["serve"])
    assert asked["services"]["server"]["environment"]["KTHYBRID_TRUST_REMOTE_CODE"] == "true"


def test_extra_args_pass_as_the_json_array_written_in_env(compose: Compose) -> None:
    project = compose(KTHYBRID_EXTRA_ARGS='\'["--log-level", "debug x"]\'')
    env = project.config(["serve"])["services"]["server"]["environment"]
    assert env["KTHYBRID_EXTRA_ARGS"] == '["--log-level", "debug x"]'


def test_the_download_revision_is_pinnable(compose: Compose) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    download = compose(HF_REVISION=commit).config(["download"])["services"]["download"]
    assert download["environment"]["HF_REVISION"] == commit
    assert '--revision "$$HF_REVISION"' in download["command"][0]


def test_the_download_revision_is_left_out_when_empty(services: dict[str, Any]) -> None:
    download = services["download"]
    assert download["environment"]["HF_REVISION"] == ""
    assert "${HF_REVISION:+" in download["command"][0].replace("$$", "$")


# Set by compose/arch/<ARCH>.env to prove ARCH is a known target; the launcher ignores it.
COMPOSE_ONLY = {"KTHYBRID_COMPOSE_ARCH"}


def test_every_kthybrid_variable_compose_sets_is_one_the_launcher_reads(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        names = {k for k in service.get("environment", {}) if k.startswith("KTHYBRID_")}
        unknown = names - ENV_NAMES - COMPOSE_ONLY
        assert not unknown, f"{name}: {sorted(unknown)}"
