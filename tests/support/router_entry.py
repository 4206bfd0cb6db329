"""The router image's entry script (docker/router/kthybrid_router.py), loaded as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ENTRY = Path(__file__).resolve().parents[2] / "docker" / "router" / "kthybrid_router.py"


def load_router_entry() -> ModuleType:
    """Import the entry from its file (it is no package's module; nothing edits sys.path)."""
    if "kthybrid_router" in sys.modules:
        return sys.modules["kthybrid_router"]
    spec = importlib.util.spec_from_file_location("kthybrid_router", ENTRY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kthybrid_router"] = module
    spec.loader.exec_module(module)
    return module
