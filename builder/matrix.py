"""Loads and validates the two data files: GPU targets and pinned versions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from builder.errors import MatrixError, UnknownTargetError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
TARGETS_FILE = PACKAGE_DIR / "targets.yaml"
VERSIONS_FILE = PACKAGE_DIR / "versions.yaml"


@dataclass(frozen=True)
class PruneRule:
    """Files of one distribution that some targets' GPUs can never load."""

    name: str
    distribution: str
    paths: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class Target:
    """One GPU architecture that gets its own image."""

    name: str
    family: str
    compute_capability: str
    torch_cuda_arch_list: str
    flashinfer_cuda_arch_list: str
    nvrtc_arch: str
    sgl_kernel_ops: str
    mxfp4_moe_backend: str
    mxfp4_prefill_backend: str
    nsa_backend: str
    nsa_indexer: str
    validated_upstream: bool
    validation_note: str
    min_driver: str
    gpu_products: tuple[str, ...]
    prune: tuple[PruneRule, ...] = ()

    @property
    def backends(self) -> dict[str, str]:
        """The sglang-kt backends this target's DeepSeek-V4 path runs, by role."""
        return {
            "mxfp4_moe": self.mxfp4_moe_backend,
            "mxfp4_prefill": self.mxfp4_prefill_backend,
            "nsa": self.nsa_backend,
            "nsa_indexer": self.nsa_indexer,
        }


@dataclass(frozen=True)
class Needs:
    """What a backend, or a model type's own code, needs at run time beyond the packages."""

    why: str
    nvcc: bool = False
    python_module: str | None = None


@dataclass(frozen=True)
class RuntimeNeeds:
    backends: dict[str, Needs]
    model_types: dict[str, Needs]


@dataclass(frozen=True)
class Requirement:
    name: str
    version: str
    why: str


@dataclass(frozen=True)
class Override:
    name: str
    spec: str
    replaces: str
    why: str


@dataclass(frozen=True)
class ModuleReplacement:
    module: str
    installed_by: str
    replaced_by: str
    why: str


@dataclass(frozen=True)
class StackLayer:
    """One image layer of the Python stack: the locked packages its patterns select."""

    name: str
    packages: tuple[str, ...]
    why: str
    per_target: bool = False


@dataclass(frozen=True)
class Versions:
    """Every pinned version, with the reason for each."""

    python: str
    platform: str
    cuda: str
    base_image: str
    cuda_toolchain_image: str
    cuda_toolchain_version: str
    requirements: tuple[Requirement, ...]
    overrides: tuple[Override, ...]
    module_replacements: tuple[ModuleReplacement, ...]
    stack_layers: tuple[StackLayer, ...] = ()
    base_digest: str | None = None
    cuda_toolchain_digest: str | None = None

    def version_of(self, name: str) -> str:
        for requirement in self.requirements:
            if requirement.name == name:
                return requirement.version
        raise MatrixError(f"versions file has no requirement named {name!r}")

    @property
    def base_image_ref(self) -> str:
        """The base as FROM names it: by digest where one is recorded, else by tag."""
        return _ref(self.base_image, self.base_digest)

    @property
    def cuda_toolchain_image_ref(self) -> str:
        return _ref(self.cuda_toolchain_image, self.cuda_toolchain_digest)

    @property
    def cuda_tag(self) -> str:
        """`cu128` for CUDA 12.8: the form image tags and wheel names use."""
        return "cu" + self.cuda.replace(".", "")


def _ref(name: str, digest: str | None) -> str:
    return f"{name}@{digest}" if digest else name


def _load_validated(path: Path, schema_path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MatrixError(f"{path} does not exist: restore it from git") from None
    except yaml.YAMLError as error:
        raise MatrixError(f"{path} is not valid YAML: {error}") from None
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(part) for part in first.absolute_path) or "(top level)"
        raise MatrixError(
            f"{path}: {where}: {first.message} (schema {schema_path.name}; "
            f"{len(errors)} problem(s) in all)"
        )
    if not isinstance(data, dict):
        raise MatrixError(f"{path}: expected a mapping at the top level")
    return data


def load_targets(path: Path = TARGETS_FILE) -> dict[str, Target]:
    """Targets by name, in the file's order, after schema validation."""
    data = _load_validated(path, PACKAGE_DIR / "targets.schema.json")
    rules = {
        name: PruneRule(name, rule["distribution"], tuple(rule["paths"]), rule["why"])
        for name, rule in data.get("prune_rules", {}).items()
    }
    targets: dict[str, Target] = {}
    seen_cc: dict[str, str] = {}
    for name, fields in data["targets"].items():
        unknown = [rule for rule in fields.get("prune", []) if rule not in rules]
        if unknown:
            raise MatrixError(
                f"{path}: target {name!r} names prune rule(s) {', '.join(map(repr, unknown))} "
                f"that prune_rules does not define (defined: {', '.join(rules) or 'none'})"
            )
        target = Target(
            name=name,
            **{
                **fields,
                "gpu_products": tuple(fields["gpu_products"]),
                "prune": tuple(rules[rule] for rule in fields.get("prune", [])),
            },
        )
        expected = "sm" + target.compute_capability.replace(".", "")
        if name != expected:
            raise MatrixError(
                f"{path}: target {name!r} declares compute capability "
                f"{target.compute_capability}; its name must be {expected!r}"
            )
        if target.compute_capability in seen_cc:
            raise MatrixError(
                f"{path}: targets {seen_cc[target.compute_capability]!r} and {name!r} "
                f"declare the same compute capability"
            )
        seen_cc[target.compute_capability] = name
        targets[name] = target
    return targets


def load_runtime_needs(
    path: Path = TARGETS_FILE, targets: dict[str, Target] | None = None
) -> RuntimeNeeds:
    """The `backends` and `model_types` sections; every backend a target names must be there."""
    data = _load_validated(path, PACKAGE_DIR / "targets.schema.json")
    needs = RuntimeNeeds(
        backends={name: Needs(**fields) for name, fields in data["backends"].items()},
        model_types={name: Needs(**fields) for name, fields in data["model_types"].items()},
    )
    for target in (targets or load_targets(path)).values():
        for backend in target.backends.values():
            if backend not in needs.backends:
                raise MatrixError(
                    f"{path}: target {target.name!r} names backend {backend!r}, which the "
                    "backends section does not declare: add what it needs there"
                )
    return needs


def select_target(targets: dict[str, Target], name: str) -> Target:
    """The target called `name`, or an error that lists the valid names."""
    try:
        return targets[name]
    except KeyError:
        valid = ", ".join(targets)
        raise UnknownTargetError(
            f"unknown ARCH {name!r}: valid targets are {valid} (declared in builder/targets.yaml)"
        ) from None


def load_versions(path: Path = VERSIONS_FILE) -> Versions:
    """The pinned versions, after schema validation."""
    data = _load_validated(path, PACKAGE_DIR / "versions.schema.json")
    versions = Versions(
        python=data["python"],
        platform=data["platform"],
        cuda=data["cuda"],
        base_image=data["images"]["base"],
        base_digest=data["images"]["base_digest"],
        cuda_toolchain_image=data["images"]["cuda_toolchain"],
        cuda_toolchain_digest=data["images"]["cuda_toolchain_digest"],
        cuda_toolchain_version=data["images"]["cuda_toolchain_version"],
        requirements=tuple(Requirement(**item) for item in data["requirements"]),
        overrides=tuple(Override(**item) for item in data["overrides"]),
        module_replacements=tuple(
            ModuleReplacement(**item) for item in data["module_replacements"]
        ),
        stack_layers=tuple(
            StackLayer(
                name=item["name"],
                packages=tuple(item["packages"]),
                why=item["why"],
                per_target=bool(item.get("per_target", False)),
            )
            for item in data["stack_layers"]
        ),
    )
    names = [r.name for r in versions.requirements]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise MatrixError(f"{path}: requirements list {', '.join(duplicates)} more than once")
    for replacement in versions.module_replacements:
        for dist in (replacement.installed_by, replacement.replaced_by):
            if dist not in names:
                raise MatrixError(
                    f"{path}: module replacement of {replacement.module!r} names {dist!r}, "
                    f"which is not in requirements"
                )
    _check_layers(path, versions)
    return versions


def _check_layers(path: Path, versions: Versions) -> None:
    """Per-target layers come last, so that every target shares the layers before them."""
    layers = versions.stack_layers
    names = [layer.name for layer in layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise MatrixError(f"{path}: stack_layers names {', '.join(duplicates)} more than once")
    flags = [layer.per_target for layer in layers]
    if flags.count(True) != 1 or not flags[-1]:
        raise MatrixError(
            f"{path}: stack_layers needs exactly one layer with per_target: true, and it must "
            f"be the last one (the layers before it are shared by every target)"
        )


def check_prune_rules(targets: dict[str, Target], versions: Versions) -> None:
    """Every pruned distribution is installed by the per-target layer (the last one)."""
    last = versions.stack_layers[-1]
    for target in targets.values():
        for rule in target.prune:
            if rule.distribution not in last.packages:
                raise MatrixError(
                    f"prune rule {rule.name!r} (target {target.name}) removes files of "
                    f"{rule.distribution}, which the per-target layer {last.name!r} does not "
                    f"install: list it under that layer's packages in builder/versions.yaml, "
                    f"so that the files are removed where they are installed"
                )
