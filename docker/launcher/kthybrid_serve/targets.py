"""The GPU targets (sm89, sm90, ...) from builder/targets.yaml, with a built-in fallback."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Target:
    name: str
    compute_capabilities: tuple[str, ...]
    torch_cuda_arch_list: str
    flashinfer_cuda_arch_list: str
    min_driver: str


BUILTIN_TARGETS: tuple[Target, ...] = (
    Target("sm89", ("8.9",), "8.9+PTX", "8.9", "570.26"),
    Target("sm90", ("9.0",), "9.0+PTX", "9.0a", "570.26"),
    Target("sm100", ("10.0", "10.3"), "10.0+PTX", "10.0a", "570.26"),
    Target("sm120", ("12.0", "12.1"), "12.0+PTX", "12.0a", "570.26"),
)


def _parse_targets_yaml(text: str) -> dict[str, dict[str, str | list[str]]]:
    """Just enough YAML for targets.yaml (the image's venv may lack PyYAML).

    Reads `targets:` -> `<name>:` -> scalar fields and `- item` lists; other
    top-level keys are skipped.
    """
    targets: dict[str, dict[str, str | list[str]]] = {}
    in_targets = False
    current: dict[str, str | list[str]] | None = None
    list_key: str | None = None
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if indent == 0:
            in_targets = stripped == "targets:"
            current = None
            continue
        if not in_targets:
            continue
        if indent == 2 and stripped.endswith(":"):
            current = targets.setdefault(stripped[:-1].strip(), {})
            list_key = None
            continue
        if current is None:
            continue
        if stripped.startswith("- ") and list_key is not None:
            existing = current.setdefault(list_key, [])
            if isinstance(existing, list):
                existing.append(stripped[2:].strip().strip("\"'"))
            continue
        key, sep, value = stripped.partition(":")
        if not sep:
            continue
        value = value.strip()
        if value == "":
            list_key = key.strip()
            current[list_key] = []
        elif value.startswith("["):
            current[key.strip()] = [v.strip().strip("\"'") for v in value.strip("[]").split(",")]
            list_key = None
        else:
            current[key.strip()] = value.strip("\"'")
            list_key = None
    return targets


def _targets_file(environ: Mapping[str, str]) -> Path | None:
    configured = environ.get("KTHYBRID_TARGETS_FILE")
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "builder" / "targets.yaml"
        if candidate.is_file():
            return candidate
    return None


def load_targets(environ: Mapping[str, str] | None = None) -> tuple[tuple[Target, ...], str]:
    """(targets, where they came from)."""
    env = os.environ if environ is None else environ
    path = _targets_file(env)
    if path is None:
        return BUILTIN_TARGETS, "built-in mapping"
    try:
        parsed = _parse_targets_yaml(path.read_text())
    except OSError:
        return BUILTIN_TARGETS, "built-in mapping"
    builtin = {t.name: t for t in BUILTIN_TARGETS}
    result = []
    for name, fields in parsed.items():
        ccs_field = fields.get("compute_capabilities") or fields.get("compute_capability")
        if isinstance(ccs_field, str):
            ccs: tuple[str, ...] = (ccs_field,)
        elif isinstance(ccs_field, list) and ccs_field:
            ccs = tuple(ccs_field)
        elif name in builtin:
            ccs = builtin[name].compute_capabilities
        else:
            continue
        fallback = builtin.get(name, Target(name, ccs, "", "", "570.26"))
        # The data may list only the headline capability (12.0); the built-in
        # mapping adds family members the same image also runs on (12.1).
        merged = tuple(dict.fromkeys(ccs + fallback.compute_capabilities))
        result.append(
            Target(
                name=name,
                compute_capabilities=merged,
                torch_cuda_arch_list=_str(fields.get("torch_cuda_arch_list"))
                or fallback.torch_cuda_arch_list,
                flashinfer_cuda_arch_list=_str(fields.get("flashinfer_cuda_arch_list"))
                or fallback.flashinfer_cuda_arch_list,
                min_driver=_str(fields.get("min_driver")) or fallback.min_driver,
            )
        )
    if not result:
        return BUILTIN_TARGETS, "built-in mapping"
    return tuple(result), str(path)


def _str(value: str | list[str] | None) -> str:
    return value if isinstance(value, str) else ""


def target_for_cc(cc: str, targets: tuple[Target, ...]) -> Target | None:
    for target in targets:
        if cc in target.compute_capabilities:
            return target
    return None


def driver_at_least(version: str, minimum: str) -> bool:
    def key(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"[0-9]+", text))

    return key(version) >= key(minimum)
