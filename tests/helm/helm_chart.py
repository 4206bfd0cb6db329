"""Rendering the kthybrid chart with the real helm binary, and reading what it renders."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from builder.matrix import load_targets

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "kthybrid"
SCENARIO_DIR = CHART_DIR / "ci"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
INSTALL_SCRIPT = REPO_ROOT / "tools" / "install-helm.sh"
HELM = REPO_ROOT / ".tools" / "bin" / "helm"
RELEASE = "kthybrid"
NAMESPACE = "serving"
KUBERNETES_VERSION = "1.33"

SCENARIOS = sorted(p.name.removesuffix("-values.yaml") for p in SCENARIO_DIR.glob("*-values.yaml"))
# The targets come from the builder's data file; the chart's files/targets.yaml is its render.
TARGETS = sorted(load_targets())
DEFAULT_TARGET: str = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["target"]


class RenderError(Exception):
    """helm template refused the values; the message is helm's stderr."""


@dataclass(frozen=True)
class Rendered:
    """One `helm template` run: the raw text and its documents."""

    text: str
    documents: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.documents if d["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]


def run_helm_template(
    helm: Path,
    *values_files: Path,
    set_values: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
    chart: Path = CHART_DIR,
) -> Rendered:
    command = [str(helm), "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for values_file in values_files:
        command += ["--values", str(values_file)]
    for assignment in set_values:
        command += ["--set", assignment]
    command += list(extra)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    return Rendered(result.stdout, documents)


def scenario_file(scenario: str) -> Path:
    return SCENARIO_DIR / f"{scenario}-values.yaml"


def pod_specs(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every pod the release can create."""
    for doc in rendered.documents:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        kind = doc["kind"]
        if kind == "Pod":
            yield name, doc["spec"]
        elif kind in ("Deployment", "Job"):
            yield name, doc["spec"]["template"]["spec"]
        elif kind == "LeaderWorkerSet":
            lwt = doc["spec"]["leaderWorkerTemplate"]
            yield f"{name} leader", lwt["leaderTemplate"]["spec"]
            yield f"{name} worker", lwt["workerTemplate"]["spec"]


def server_pod_specs(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    """The serving pods: not the test pod, jobs, or the router's Deployment (router.enabled)."""
    routers = {
        f"Deployment/{d['metadata']['name']}"
        for d in rendered.of_kind("Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "router"
    }
    return [
        (w, s)
        for w, s in pod_specs(rendered)
        if not w.startswith(("Pod/", "Job/")) and w not in routers
    ]


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    for c in spec.get("initContainers", []) + spec["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name!r} in {[c['name'] for c in spec['containers']]}")


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def shape(node: Any) -> Any:
    """The structure of parsed YAML: mapping keys and list lengths, with scalars reduced to
    their type. Two renders with the same shape have the same fields everywhere."""
    if isinstance(node, dict):
        return {key: shape(value) for key, value in node.items()}
    if isinstance(node, list):
        return [shape(item) for item in node]
    return type(node).__name__


def scalars(node: Any) -> Iterator[Any]:
    """Every scalar in parsed YAML."""
    if isinstance(node, dict):
        for value in node.values():
            yield from scalars(value)
    elif isinstance(node, list):
        for item in node:
            yield from scalars(item)
    else:
        yield node


def merged_values(*values_files: Path) -> dict[str, Any]:
    """values.yaml with the files on top, as helm merges them (maps deep, the rest replaced)."""

    def merge(base: Any, top: Any) -> Any:
        if isinstance(base, dict) and isinstance(top, dict):
            return {**base, **{k: merge(base.get(k), v) for k, v in top.items()}}
        return top

    values: dict[str, Any] = load_yaml(CHART_DIR / "values.yaml")
    for path in values_files:
        values = merge(values, load_yaml(path) or {})
    return values
