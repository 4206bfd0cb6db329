"""Lists the names sglang imports from a library (read from its source) that the library lacks.

Evidence for the transformers 4.57.1 pin: sglang-kt was written against its transformers fork,
so any `from transformers... import X` that 4.57.1 cannot satisfy is found here, with the files
that need it. Usage: python imported_names.py transformers [huggingface_hub ...]. Prints JSON.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import sys
from collections import defaultdict
from pathlib import Path


def imported_names(root: Path, library: str) -> dict[tuple[str, str], set[str]]:
    needed: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in root.rglob("*.py"):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module == library or node.module.startswith(library + "."):
                for alias in node.names:
                    needed[(node.module, alias.name)].add(path.relative_to(root).as_posix())
    return needed


def resolves(module: str, name: str) -> bool:
    try:
        loaded = importlib.import_module(module)
    except Exception:
        return False
    if name == "*" or hasattr(loaded, name):
        return True
    try:
        importlib.import_module(f"{module}.{name}")
    except Exception:
        return False
    return True


def main() -> int:
    spec = importlib.util.find_spec("sglang")
    if spec is None or spec.submodule_search_locations is None:
        raise SystemExit("sglang is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    report = {}
    for library in sys.argv[1:]:
        needed = imported_names(root, library)
        missing = [
            {"module": module, "name": name, "files": sorted(files)}
            for (module, name), files in sorted(needed.items())
            if not resolves(module, name)
        ]
        version = importlib.import_module(library).__version__
        report[library] = {"version": version, "names": len(needed), "missing": missing}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
