"""Upgrading from earlier chart releases: their default values files against the current chart.

tests/helm/previous/values-<version>.yaml are the released values.yaml files, taken from git
history (the commit is in each file's first line). The removed values come from CHANGELOG.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart import REPO_ROOT, Rendered, RenderError

PREVIOUS = Path(__file__).resolve().parent / "previous"
CHANGELOG = REPO_ROOT / "CHANGELOG.md"
CHART_VERSION = yaml.safe_load((REPO_ROOT / "helm" / "kthybrid" / "Chart.yaml").read_text())[
    "version"
]


def removed_in(version: str) -> list[str]:
    """The `path` items of the "Removed values" list in CHANGELOG.md's section for `version`."""
    text = CHANGELOG.read_text()
    section = re.search(rf"^## Chart {re.escape(version)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert section, f"CHANGELOG.md has no section '## Chart {version}'"
    removed = re.search(r"^### Removed values\n(.*?)(?=^### |\Z)", section.group(1), re.M | re.S)
    assert removed, f"CHANGELOG.md's {version} section has no '### Removed values'"
    return re.findall(r"^- `([A-Za-z0-9_.]+)`", removed.group(1), re.M)


def without(values: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    for path in paths:
        *parents, leaf = path.split(".")
        node = values
        for key in parents:
            node = node[key]
        node.pop(leaf)
    return values


def previous_release() -> str:
    versions = sorted(
        (p.stem.removeprefix("values-") for p in PREVIOUS.glob("values-*.yaml")),
        key=lambda v: tuple(int(x) for x in v.split(".")),
    )
    return versions[-1]


def test_the_previous_release_is_older_than_the_chart() -> None:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))

    assert key(previous_release()) < key(CHART_VERSION)


def test_the_previous_release_s_default_values_render(render: Callable[..., Rendered]) -> None:
    rendered = render(PREVIOUS / f"values-{previous_release()}.yaml")
    assert rendered.of_kind("Deployment") or rendered.of_kind("LeaderWorkerSet")


def test_0_1_0_defaults_are_refused_naming_the_values_the_changelog_lists(
    render: Callable[..., Rendered],
) -> None:
    with pytest.raises(RenderError) as refused:
        render(PREVIOUS / "values-0.1.0.yaml")
    named = set(re.findall(r"at '/(\w+)/(\w+)'", str(refused.value)))
    listed = {tuple(path.split(".")) for path in removed_in("0.2.0")}
    assert named and named <= listed, named - listed


def test_0_1_0_defaults_render_once_the_changelog_s_removed_values_are_deleted(
    render: Callable[..., Rendered], tmp_path: Path
) -> None:
    values = yaml.safe_load((PREVIOUS / "values-0.1.0.yaml").read_text())
    upgraded = tmp_path / "values.yaml"
    upgraded.write_text(yaml.safe_dump(without(values, removed_in("0.2.0"))))
    rendered = render(upgraded)
    assert rendered.of_kind("Deployment") or rendered.of_kind("LeaderWorkerSet")
