"""Advice names settings that exist: Helm values, compose keys and options named by the launcher."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kthybrid_serve.settings import ENV_NAMES, OPTIONS

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "docker" / "launcher" / "kthybrid_serve"
# Variables the launcher reads or names that are not options: set by the image, or refused.
NOT_OPTIONS = {"KTHYBRID_TARGET", "KTHYBRID_TARGET_CC", "KTHYBRID_TARGETS_FILE",
               "KTHYBRID_CONVERT_SCRIPT", "KTHYBRID_FOO_BAR", "KTHYBRID_OPTION"}  # fmt: skip
HELM_PATH = re.compile(
    r"\b(hostMemory|server|kt|hugepages|multiNode|resources|models|image|cache)\.[a-zA-Z.]+\b"
)


def chart_has(path: str) -> bool:
    """The chart declares the value: values.schema.json lists every value, including the
    launcher options values.yaml leaves out (unset: the launcher's default)."""
    node: object = json.loads((REPO / "helm" / "kthybrid" / "values.schema.json").read_text())
    for part in path.split("."):
        properties = node.get("properties") if isinstance(node, dict) else None
        if not isinstance(properties, dict) or part not in properties:
            return False
        node = properties[part]
    return True


def launcher_strings() -> list[str]:
    """String literals of the launcher, f-string expressions removed."""
    literals = [m for f in LAUNCHER.glob("*.py") for m in re.findall(r'"[^"\n]*"', f.read_text())]
    return [re.sub(r"\{[^}]*\}", "", literal) for literal in literals]


def test_every_helm_value_an_option_names_exists() -> None:
    for option in OPTIONS:
        if option.spec.helm:
            assert chart_has(option.spec.helm), (option.env, option.spec.helm)


def test_every_helm_value_a_message_names_exists() -> None:
    named = {m.group(0).rstrip(".") for s in launcher_strings() for m in HELM_PATH.finditer(s)}
    named = {n for n in named if not n.endswith((".py", ".json", ".yaml"))}
    assert "hostMemory.limitGi" in named  # the memory-limit advice
    for path in sorted(named):
        assert chart_has(path), path


def test_every_variable_a_message_names_is_an_option() -> None:
    named = {v for s in launcher_strings() for v in re.findall(r"KTHYBRID_[A-Z_]+[A-Z]", s)}
    assert named - NOT_OPTIONS, "the scan found no variable names"
    for name in sorted(named - NOT_OPTIONS):
        assert name in ENV_NAMES, name


def test_the_readme_documents_every_exit_code() -> None:
    from kthybrid_serve.errors import ALL_ERRORS

    readme = (REPO / "docker" / "launcher" / "README.md").read_text()
    for error in ALL_ERRORS:
        assert re.search(rf"^\| {error.exit_code} \|", readme, flags=re.M), error.__name__


def test_compose_passes_every_option_it_does_not_set_itself() -> None:
    """Advice that names KTHYBRID_X works in compose: .env.example has it and compose passes it."""
    from builder.render import COMPOSE_SETS

    compose = (REPO / "compose" / "compose.yaml").read_text()
    example = (REPO / "compose" / ".env.example").read_text()
    for option in OPTIONS:
        if option.dest in COMPOSE_SETS:
            assert f"{option.env}:" in compose, option.env  # compose sets it
            continue
        assert f"{option.env}: ${{{option.env}:-}}" in compose, option.env
        assert re.search(rf"^{option.env}=$", example, flags=re.M), option.env
