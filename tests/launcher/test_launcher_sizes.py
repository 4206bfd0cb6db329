"""Module and function sizes: no module over 350 lines, no function over 80 (launcher, builder)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 80


def _oversized(root: Path) -> list[str]:
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        name = path.relative_to(REPO)
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - start + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_launcher_module_or_function_is_over_the_size_limits() -> None:
    assert _oversized(REPO / "docker" / "launcher" / "kthybrid_serve") == []


@pytest.mark.xfail(strict=False, reason="builder split lands with the chartgen branch")
def test_no_builder_module_or_function_is_over_the_size_limits() -> None:
    assert _oversized(REPO / "builder") == []
