"""The launcher's house: which of its parts may import which, read from the source with `ast`.

Parts are the subpackages (host, model, plan, cpubench, client, convert) and the top-level
modules. Arrows run one way: host/ and model/ -> plan/ -> validate/report/workflow -> cli.
Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "docker" / "launcher" / "kthybrid_serve"
# Rank of each part: an import goes to a part of lower rank, or within its own part.
RANK = {
    "errors": 0,
    "units": 0,
    "untrusted": 0,
    "external": 0,
    "drawing": 0,
    "__init__": 0,
    "host": 1,
    "model": 2,
    "parsers": 2,
    "settings": 3,
    "apikey": 2,
    "ktkernel": 3,
    "plan": 4,
    "convert": 4,
    "client": 4,
    "validate": 5,
    "metrics": 5,
    "replica_checks": 6,
    "report": 7,
    "workflow": 7,
    "cpubench": 7,
    "cli": 8,
    "sglang_entry": 8,
    "__main__": 9,
}
SKIPPED_DIRS = frozenset({".git", ".venv", ".tools", "node_modules", "__pycache__"})


def _imported(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _part(module: str) -> str | None:
    """The part of kthybrid_serve a dotted name lies in, or None outside the launcher."""
    names = module.split(".")
    if names[0] != "kthybrid_serve":
        return None
    if len(names) > 1 and ((PACKAGE / names[1]).is_dir() or (PACKAGE / f"{names[1]}.py").exists()):
        return names[1]
    return "__init__"


def _graph() -> dict[str, set[str]]:
    arrows: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("").parts
        source = relative[0]
        arrows.setdefault(source, set())
        for module in _imported(ast.parse(path.read_text(), str(path))):
            target = _part(module)
            if target is not None and target != source:
                arrows[source].add(target)
    return arrows


def _python_files() -> Iterator[Path]:
    for path in REPO.rglob("*.py"):
        if not SKIPPED_DIRS.intersection(path.relative_to(REPO).parts):
            yield path


def _loads_kt_kernel(tree: ast.AST) -> bool:
    """An import of kt_kernel, or importlib asked for it by name (find_spec, import_module)."""
    if any(name.split(".")[0] == "kt_kernel" for name in _imported(tree)):
        return True
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                name in {"find_spec", "import_module", "__import__"}
                and isinstance(first, ast.Constant)
                and str(first.value).split(".")[0] == "kt_kernel"
            ):
                return True
    return False


def test_every_part_of_the_launcher_has_a_rank() -> None:
    parts = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.parent.name for p in PACKAGE.glob("*/__init__.py")
    }
    assert parts == set(RANK), sorted(parts ^ set(RANK))


def test_the_plan_never_imports_the_bench_the_client_or_the_converter() -> None:
    assert _graph()["plan"].isdisjoint({"cpubench", "client", "convert"}), _graph()["plan"]


def test_imports_run_from_higher_layers_to_lower_ones() -> None:
    backwards = sorted(
        f"{source} -> {target}"
        for source, targets in _graph().items()
        for target in targets
        if RANK[target] >= RANK[source]
    )
    assert backwards == []


def test_the_launchers_parts_import_each_other_without_cycles() -> None:
    graph = _graph()
    done: set[str] = set()

    def cycle_from(node: str, trail: tuple[str, ...]) -> tuple[str, ...] | None:
        if node in trail:
            return (*trail[trail.index(node) :], node)
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            found = cycle_from(target, (*trail, node))
            if found:
                return found
        done.add(node)
        return None

    cycles = [cycle for part in sorted(graph) if (cycle := cycle_from(part, ()))]
    assert cycles == []


def test_ktkernel_is_the_one_module_in_the_repository_that_imports_kt_kernel() -> None:
    loaders = sorted(
        str(path.relative_to(REPO))
        for path in _python_files()
        if _loads_kt_kernel(ast.parse(path.read_text(), str(path)))
    )
    assert loaders == ["docker/launcher/kthybrid_serve/ktkernel.py"]


def _edits_sys_path(tree: ast.AST) -> bool:
    """A call on sys.path (insert, append, extend) or an assignment to it."""
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
        elif isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((t for t in targets if isinstance(t, ast.Attribute)), None)
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "path"
            and isinstance(target.value, ast.Name)
            and target.value.id == "sys"
        ):
            return True
    return False


def test_no_python_file_in_the_repository_edits_sys_path() -> None:
    # Tests and bench share helpers through the tests.support package (issue 17).
    editors = sorted(
        str(path.relative_to(REPO))
        for path in _python_files()
        if _edits_sys_path(ast.parse(path.read_text(), str(path)))
    )
    assert editors == []
