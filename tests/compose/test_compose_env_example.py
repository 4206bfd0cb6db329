""".env.example documents every variable the compose files read, with their defaults."""

from __future__ import annotations

import re

from tests.support.compose_project import COMPOSE_DIR, env_example

# ${NAME}, ${NAME:-default}, ${NAME:?message}
_REFERENCE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::([-?])([^}]*))?\}")
# Set by Compose itself from -p or the directory name.
_FROM_COMPOSE = {"COMPOSE_PROJECT_NAME"}


def _references_in(text: str) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for match in _REFERENCE.finditer(text):
        default = match.group(3) if match.group(2) == "-" else None
        if default is not None and default.startswith("${"):
            # ${A:-${B:-x}}: A falls back to B, so .env.example leaves A empty; B is read too.
            found.append((match.group(1), ""))
            found += _references_in(default + "}")
        else:
            found.append((match.group(1), default))
    return found


def _references() -> list[tuple[str, str | None]]:
    found = []
    for path in sorted(COMPOSE_DIR.glob("compose*.yaml")):
        found += _references_in(path.read_text())
    return found


def test_a_fallback_to_another_variable_is_read_as_both() -> None:
    assert _references_in("${FLEET_0_MEM_LIMIT:-${MEM_LIMIT:-200g}}") == [
        ("FLEET_0_MEM_LIMIT", ""), ("MEM_LIMIT", "200g"),
    ]  # fmt: skip


def test_every_variable_is_in_env_example() -> None:
    documented = set(env_example())
    missing = {name for name, _ in _references()} - documented - _FROM_COMPOSE
    assert not missing, f"add these to compose/.env.example with a comment: {sorted(missing)}"


def test_env_example_values_are_the_compose_defaults() -> None:
    documented = env_example()
    differ = {
        name: (documented[name], default)
        for name, default in _references()
        if default is not None and name in documented and documented[name] != default
    }
    assert not differ, f".env.example value vs compose default: {differ}"


def test_every_variable_has_a_comment() -> None:
    lines = (COMPOSE_DIR / ".env.example").read_text().splitlines()
    # A variable is documented by the comment block right above it or above its group.
    uncommented = [
        line.split("=")[0]
        for index, line in enumerate(lines)
        if "=" in line
        and not line.startswith("#")
        and not any(lines[i].startswith("#") for i in range(max(0, index - 3), index))
    ]
    assert not uncommented, f"no comment near: {uncommented}"
