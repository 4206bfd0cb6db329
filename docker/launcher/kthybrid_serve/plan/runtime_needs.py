"""What the planned paths need from the image at run time (nvcc, optional kernel packages)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from kthybrid_serve.errors import MissingKernelError, MissingToolError
from kthybrid_serve.model.model import ModelFacts
from kthybrid_serve.plan.items import PlanItem
from kthybrid_serve.plan.targets import Needs, Target, TargetData

REBUILD_WITH_NVCC = (
    "rebuild the image where nvidia/cuda:12.8.1-devel-ubuntu22.04 (or a mirror of it) can be "
    "pulled (`python -m builder build --cuda-toolchain-image ...`)"
)


@dataclass(frozen=True)
class ImageFacts:
    """What the image the launcher runs in holds: its target, nvcc, optional modules."""

    target: str | None  # KTHYBRID_TARGET; None in a checkout
    nvcc: str | None
    modules: frozenset[str]  # the backends' optional Python modules that import here


def read_image(environ: Mapping[str, str], data: TargetData) -> ImageFacts:
    wanted = {n.python_module for n in data.backends.values() if n.python_module}
    found = frozenset(m for m in wanted if importlib.util.find_spec(m) is not None)
    path = environ.get("PATH", os.defpath)
    cuda_home = environ.get("CUDA_HOME")
    nvcc = shutil.which("nvcc", path=path) or (
        shutil.which("nvcc", path=os.path.join(cuda_home, "bin")) if cuda_home else None
    )
    return ImageFacts(environ.get("KTHYBRID_TARGET") or None, nvcc, found)


def _runtime_needs(
    target: Target | None, model: ModelFacts, data: TargetData, full_layers_on_gpu: bool
) -> list[tuple[str, Needs]]:
    """(what, needs) for the model's own code and the backends this plan runs."""
    needs = []
    if model.model_type in data.model_types:
        needs.append((f"{model.model_type} model code", data.model_types[model.model_type]))
    if target is None or model.model_type != "deepseek_v4":
        return needs
    roles = dict(target.backends)
    used = ["nsa", "nsa_indexer"]
    if model.routed_format == "MXFP4":
        used += ["mxfp4_moe"] + (["mxfp4_prefill"] if full_layers_on_gpu else [])
    for role in used:
        needs.append((f"{roles[role]} ({role.replace('_', ' ')})", data.backends[roles[role]]))
    return needs


def check_runtime_needs(
    target: Target | None,
    model: ModelFacts,
    data: TargetData,
    image: ImageFacts,
    full_layers_on_gpu: bool,
) -> PlanItem:
    """Refuse, before anything loads, a plan whose paths need what this image lacks."""
    needs = _runtime_needs(target, model, data, full_layers_on_gpu)
    if image.target is None:
        return PlanItem("runtime needs", "not checked",
                        "not in an image (KTHYBRID_TARGET unset): nvcc and optional kernel "
                        "packages are checked where the server runs")  # fmt: skip
    # Missing packages first: no rebuild with the CUDA toolchain fixes those.
    for what, need in needs:
        if need.python_module and need.python_module not in image.modules:
            raise MissingKernelError(
                f"{what} imports {need.python_module}, which this image lacks ({need.why}); "
                f"the server would fail after minutes of loading. Serve {model.model_type} on "
                "a GPU of another target (sm89, sm100, sm120) or add a working "
                f"{need.python_module} wheel to the image"
            )
    for what, need in needs:
        if need.nvcc and image.nvcc is None:
            raise MissingToolError(
                f"{what} compiles CUDA kernels with nvcc at run time ({need.why}) and this "
                f"image has no nvcc (built without the CUDA toolchain image); {REBUILD_WITH_NVCC}"
            )
    shown = ", ".join(what for what, _ in needs) or "none"
    return PlanItem("runtime needs", "met", f"nvcc at {image.nvcc}; checked: {shown}")
