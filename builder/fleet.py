"""Renders compose/compose.fleet.yaml: the router and one server per replica (builder/fleet.yaml).

Each replica is the compose `server` service (extended from compose.yaml) pinned to its own
CPU set, NUMA node(s) and GPU(s), with no port of its own: clients reach the router, which
waits until every replica is healthy. The per-replica bindings are host facts, so the file
names them as variables (FLEET_<i>_CPUSET, FLEET_<i>_NUMA_NODES, FLEET_<i>_GPUS) that .env
sets in one place; `kthybrid-serve plan --replicas N --fleet-env` prints those lines (the seam).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from builder.errors import MatrixError
from builder.matrix import PACKAGE_DIR, REPO_ROOT
from builder.render import RenderedFile

FLEET_FILE = PACKAGE_DIR / "fleet.yaml"
FLEET_COMPOSE = Path("compose") / "compose.fleet.yaml"
SERVER_PORT = 30000
MAX_REPLICAS = 64


def load_fleet(path: Path = FLEET_FILE) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MatrixError(f"{path} does not exist: restore it from git") from None
    except yaml.YAMLError as error:
        raise MatrixError(f"{path} is not valid YAML: {error}") from None
    replicas = data.get("replicas") if isinstance(data, dict) else None
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise MatrixError(f"{path}: `replicas` must be a whole number of servers")
    if not 1 <= replicas <= MAX_REPLICAS:
        raise MatrixError(f"{path}: replicas is {replicas}; give 1 to {MAX_REPLICAS}")
    policy = data.get("policy")
    if policy not in ("cache_aware", "power_of_two", "round_robin", "random"):
        raise MatrixError(
            f"{path}: policy {policy!r} is not one of cache_aware, power_of_two, round_robin, "
            f"random"
        )
    return {"replicas": replicas, "policy": policy}


def variable(replica: int, what: str) -> str:
    return f"FLEET_{replica}_{what}"


def _required(replica: int, what: str, example: str) -> str:
    name = variable(replica, what)
    return f"${{{name}:?{name} is not set; set it in .env, e.g. {name}={example}}}"


def _server(replica: int) -> dict[str, Any]:
    return {
        "extends": {"file": "compose.yaml", "service": "server"},
        "profiles": ["fleet"],
        "cpuset": _required(replica, "CPUSET", f"{replica * 32}-{replica * 32 + 31}"),
        # The replica's own budget (plan --fleet-env prints it); else compose's MEM_LIMIT.
        "mem_limit": f"${{{variable(replica, 'MEM_LIMIT')}:-${{MEM_LIMIT:-200g}}}}",
        "environment": {
            "KTHYBRID_KT_NUMA_NODES": _required(replica, "NUMA_NODES", str(replica)),
        },
        "deploy": {
            "resources": {
                "reservations": {
                    "devices": [
                        {
                            "driver": "nvidia",
                            "device_ids": [_required(replica, "GPUS", str(replica))],
                            "capabilities": ["gpu"],
                        }
                    ]
                }
            }
        },
        # Only the router publishes a port; replicas answer on the project network.
        "ports": [],
        "networks": {"default": {"aliases": [f"kthybrid-{replica}"]}},
    }


# The router's memory limit in compose, the chart's router.resources.memoryGi default.
ROUTER_MEM_LIMIT = "4g"


def _router(replicas: int, policy: str) -> dict[str, Any]:
    workers = [f"http://server-{i}:{SERVER_PORT}" for i in range(replicas)]
    return {
        "image": "${ROUTER_IMAGE:-kthybrid:router}",
        "profiles": ["fleet"],
        "user": "10000:10000",
        "read_only": True,
        "security_opt": ["no-new-privileges:true"],
        "cap_drop": ["ALL"],
        "tmpfs": ["/tmp:mode=1777"],
        # The router's prefix tree grows with traffic; the chart's router.resources default.
        "mem_limit": f"${{ROUTER_MEM_LIMIT:-{ROUTER_MEM_LIMIT}}}",
        "pids_limit": 1024,
        "command": [
            *("--host", "0.0.0.0", "--port", str(SERVER_PORT)),
            *("--prometheus-host", "0.0.0.0", "--prometheus-port", "29000"),
            *("--policy", f"${{ROUTER_POLICY:-{policy}}}"),
            *("--worker-urls", *workers),
        ],
        "secrets": [{"source": "kthybrid-api-key", "target": "kthybrid-api-key"}],
        "environment": {"KTHYBRID_API_KEY_FILE": "/run/secrets/kthybrid-api-key"},
        "depends_on": {
            f"server-{i}": {"condition": "service_healthy", "restart": True}
            for i in range(replicas)
        },
        "ports": [f"${{HOST_ADDRESS:-127.0.0.1}}:${{HOST_PORT:-30000}}:{SERVER_PORT}"],
        "healthcheck": {
            "test": [
                *("CMD", "/opt/router/bin/python", "-c"),
                f"import urllib.request; urllib.request.urlopen("
                f"'http://127.0.0.1:{SERVER_PORT}/liveness', timeout=4)",
            ],
            "interval": "15s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "30s",
        },
        "restart": "${RESTART_POLICY:-unless-stopped}",
        "networks": {"default": {"aliases": ["kthybrid"]}},
    }


HEADER = """\
# Generated by `python -m builder render` from builder/fleet.yaml; do not edit.
# The `fleet` profile: sglang's cache-aware router in front of {replicas} kthybrid servers, each
# pinned to its own CPU set, NUMA node(s) and GPU(s). Clients use the router's port (HOST_PORT);
# chat reaches it as `kthybrid`.
#   COMPOSE_FILE=compose.yaml:compose.fleet.yaml  COMPOSE_PROFILES=fleet
#   make router-image                    # the router image (kthybrid:router; no CUDA)
#   docker compose up -d --wait
# Per replica i (0..{last}) .env sets (one place; from the host's plan:
#   docker compose run --rm server plan --replicas {replicas} --fleet-env >> .env):
#   FLEET_<i>_CPUSET      the CPUs of the replica's NUMA node(s), e.g. 0-31 (Docker's cpuset)
#   FLEET_<i>_NUMA_NODES  the NUMA node(s) of its CPU experts, e.g. 0 (KTHYBRID_KT_NUMA_NODES)
#   FLEET_<i>_GPUS        its GPU id(s) (nvidia-smi index or UUID), e.g. 0
# Another number of replicas: change builder/fleet.yaml and run `make dockerfiles`.
"""


def render_fleet_compose(root: Path = REPO_ROOT, path: Path = FLEET_FILE) -> RenderedFile:
    fleet = load_fleet(path)
    replicas = fleet["replicas"]
    services: dict[str, Any] = {f"server-{i}": _server(i) for i in range(replicas)}
    services["router"] = _router(replicas, fleet["policy"])
    body = yaml.safe_dump(
        {"services": services}, sort_keys=False, default_flow_style=False, width=170
    )
    # Compose's merge tags, which safe_dump cannot write: a replica replaces the server's
    # profile, port, GPU reservation and network alias instead of adding to them.
    for plain, tagged in (
        ("    ports: []\n", "    ports: !reset []\n"),
        ("    profiles:\n    - fleet\n    cpuset:",
         "    profiles: !override\n    - fleet\n    cpuset:"),
        ("        devices:\n", "        devices: !override\n"),
        ("    networks:\n      default:\n        aliases:\n        - kthybrid-",
         "    networks: !override\n      default:\n        aliases:\n        - kthybrid-"),
    ):  # fmt: skip
        body = body.replace(plain, tagged)
    text = HEADER.format(replicas=replicas, last=replicas - 1) + body
    return RenderedFile(root / FLEET_COMPOSE, text, root)


ENV_EXAMPLE = Path("compose") / ".env.example"
ENV_START = "# -- fleet (generated by `python -m builder render` from builder/fleet.yaml)"
ENV_END = "# -- end of fleet"


def _env_block(fleet: dict[str, Any]) -> str:
    lines = [
        "# The `fleet` profile (COMPOSE_FILE=compose.yaml:compose.fleet.yaml and",
        "# COMPOSE_PROFILES=fleet): the router image and its policy (cache_aware | power_of_two |",
        "# round_robin | random)",
        "ROUTER_IMAGE=kthybrid:router",
        f"ROUTER_POLICY={fleet['policy']}",
        "# The router's memory limit (its prefix tree grows with traffic)",
        f"ROUTER_MEM_LIMIT={ROUTER_MEM_LIMIT}",
    ]
    for i in range(fleet["replicas"]):
        lines += [
            f"# replica {i}: its CPUs (cpuset), its CPU experts' NUMA node(s), its GPU id(s);",
            f"# e.g. {variable(i, 'CPUSET')}={i * 32}-{i * 32 + 31} "
            f"{variable(i, 'NUMA_NODES')}={i} {variable(i, 'GPUS')}={i}",
            f"{variable(i, 'CPUSET')}=",
            f"{variable(i, 'NUMA_NODES')}=",
            f"{variable(i, 'GPUS')}=",
            "# its memory limit (plan --fleet-env: its own budget; empty: MEM_LIMIT)",
            f"{variable(i, 'MEM_LIMIT')}=",
        ]
    return "\n".join(lines)


def with_fleet_env(files: list[RenderedFile], root: Path = REPO_ROOT) -> list[RenderedFile]:
    """The files with .env.example's fleet block rendered (on top of its other blocks)."""
    path = root / ENV_EXAMPLE
    block = _env_block(load_fleet())
    result = []
    for item in files:
        if item.path == path and ENV_START in item.text and ENV_END in item.text:
            head, rest = item.text.split(ENV_START, 1)
            _, tail = rest.split(ENV_END, 1)
            item = RenderedFile(path, f"{head}{ENV_START}\n{block}\n{ENV_END}{tail}", root)
        result.append(item)
    return result
