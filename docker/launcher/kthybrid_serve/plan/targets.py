"""The GPU targets and run-time needs, from the package data the builder renders (targets.json)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from kthybrid_serve.errors import LauncherError

DATA_FILE = "targets.json"


class TargetsDataError(LauncherError):
    """The package's targets.json is missing or malformed: a broken install, not a user error."""

    exit_code = 1


@dataclass(frozen=True)
class Needs:
    """What a backend or a model type's own code needs at run time beyond the packages."""

    why: str
    nvcc: bool = False
    python_module: str | None = None


@dataclass(frozen=True)
class Target:
    name: str
    compute_capabilities: tuple[str, ...]
    torch_cuda_arch_list: str
    flashinfer_cuda_arch_list: str
    min_driver: str
    backends: tuple[tuple[str, str], ...]  # (role, backend), e.g. ("nsa", "flash_mla")


@dataclass(frozen=True)
class TargetData:
    cuda: str
    min_cuda_driver: int  # NVML's form: 12080 for CUDA 12.8
    targets: tuple[Target, ...]
    backends: dict[str, Needs]
    model_types: dict[str, Needs]

    def for_cc(self, cc: str) -> Target | None:
        return next((t for t in self.targets if cc in t.compute_capabilities), None)

    def named(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)


def _field(data: dict[str, object], key: str, kind: type, where: str) -> object:
    value = data.get(key)
    if not isinstance(value, kind):
        raise TargetsDataError(
            f"kthybrid_serve/{DATA_FILE}: {where}.{key} is missing or not a {kind.__name__}; "
            "reinstall the launcher (`make dockerfiles` renders it)"
        )
    return value


def _needs(raw: object, where: str) -> Needs:
    if not isinstance(raw, dict):
        raise TargetsDataError(f"kthybrid_serve/{DATA_FILE}: {where} is not an object")
    module = raw.get("python_module")
    return Needs(
        why=str(_field(raw, "why", str, where)),
        nvcc=bool(raw.get("nvcc", False)),
        python_module=module if isinstance(module, str) else None,
    )


def _target(name: str, raw: object) -> Target:
    where = f"targets.{name}"
    if not isinstance(raw, dict):
        raise TargetsDataError(f"kthybrid_serve/{DATA_FILE}: {where} is not an object")
    ccs = _field(raw, "compute_capabilities", list, where)
    backends = _field(raw, "backends", dict, where)
    assert isinstance(ccs, list) and isinstance(backends, dict)
    return Target(
        name=name,
        compute_capabilities=tuple(str(c) for c in ccs),
        torch_cuda_arch_list=str(_field(raw, "torch_cuda_arch_list", str, where)),
        flashinfer_cuda_arch_list=str(_field(raw, "flashinfer_cuda_arch_list", str, where)),
        min_driver=str(_field(raw, "min_driver", str, where)),
        backends=tuple(sorted((str(k), str(v)) for k, v in backends.items())),
    )


def parse_target_data(text: str) -> TargetData:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise TargetsDataError(f"kthybrid_serve/{DATA_FILE} is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise TargetsDataError(f"kthybrid_serve/{DATA_FILE} is not a JSON object")
    targets = _field(data, "targets", dict, "(top)")
    backends = _field(data, "backends", dict, "(top)")
    model_types = _field(data, "model_types", dict, "(top)")
    assert isinstance(targets, dict) and isinstance(backends, dict)
    assert isinstance(model_types, dict)
    result = TargetData(
        cuda=str(_field(data, "cuda", str, "(top)")),
        min_cuda_driver=int(str(_field(data, "min_cuda_driver", int, "(top)"))),
        targets=tuple(_target(str(k), v) for k, v in targets.items()),
        backends={str(k): _needs(v, f"backends.{k}") for k, v in backends.items()},
        model_types={str(k): _needs(v, f"model_types.{k}") for k, v in model_types.items()},
    )
    for target in result.targets:
        for _, backend in target.backends:
            if backend not in result.backends:
                raise TargetsDataError(
                    f"kthybrid_serve/{DATA_FILE}: target {target.name} names backend "
                    f"{backend!r} with no entry under backends"
                )
    return result


@cache
def load_target_data() -> TargetData:
    """The package's targets.json; an error (never a built-in copy) when it is missing."""
    try:
        text = resources.files("kthybrid_serve").joinpath(DATA_FILE).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as error:
        raise TargetsDataError(
            f"kthybrid_serve/{DATA_FILE} is missing ({error}); the launcher is installed "
            "without its data: reinstall it"
        ) from None
    return parse_target_data(text)


def driver_at_least(version: str, minimum: str) -> bool:
    def key(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"[0-9]{1,9}", text))

    return key(version) >= key(minimum)
