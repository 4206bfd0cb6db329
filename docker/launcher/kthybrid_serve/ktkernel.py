"""kt-kernel, loaded: the one module of kthybrid that imports `kt_kernel`.

Two ways in, for two callers:

- `import_kt_kernel()` imports kt_kernel's Python package, for scripts that drive its API.
- `load_kt_kernel()` imports kt_kernel's Python package (which imports torch) and returns
  its extension with the AMX-INT4 MoE class: the converter's way, and the tests'.
- `load_extension()` loads only the extension, through kt-kernel's own variant loader
  (kt_kernel/_cpu_detect.py, the code `import kt_kernel` runs), without importing the Python
  API and so without torch: the CPU bench's worker, which then starts in milliseconds.
  `moe_class()` picks the MoE class kt-kernel's wrappers pick for a method.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kthybrid_serve.errors import CpuIsaError, MissingToolError, WorkerError
from kthybrid_serve.model.experts import METHODS


@dataclass(frozen=True)
class KtKernel:
    ext: Any
    moe_class: Any
    variant: str
    version: str


def import_kt_kernel() -> Any:
    """kt-kernel's Python package (it imports torch), or a refusal saying it is missing."""
    try:
        import kt_kernel
    except ImportError as error:
        raise MissingToolError(
            f"kt-kernel cannot be imported ({error}); run the converter in the kthybrid image"
        ) from error
    return kt_kernel


def load_kt_kernel() -> KtKernel:
    """kt-kernel's extension with its AMX-INT4 MoE class, or a refusal naming what is missing."""
    kt_kernel = import_kt_kernel()
    ext = kt_kernel.kt_kernel_ext
    variant = str(getattr(kt_kernel, "__cpu_variant__", "unknown"))
    moe_class = getattr(ext.moe, "AMXInt4_MOE", None)
    if moe_class is None:
        raise CpuIsaError(
            f"kt-kernel's {variant} variant has no AMX-INT4 quantizer (AMXInt4_MOE needs a CPU "
            "with AVX512F and AVX512BW), and serving AMXINT4 weights needs AMX; on this CPU "
            "serve the MXFP4 checkpoint directly (--kt-method MXFP4), no conversion"
        )
    return KtKernel(ext, moe_class, variant, str(getattr(kt_kernel, "__version__", "unknown")))


def load_extension() -> tuple[Any, str, str]:
    """kt-kernel's extension for this CPU, picked by kt-kernel's own loader.

    Returns (extension, variant, kt-kernel version).
    """
    spec = importlib.util.find_spec("kt_kernel")
    if spec is None or not spec.submodule_search_locations:
        raise WorkerError("kt-kernel is not installed (no kt_kernel package on sys.path)")
    package = Path(next(iter(spec.submodule_search_locations)))
    detect_path = package / "_cpu_detect.py"
    detect_spec = importlib.util.spec_from_file_location("_kthybrid_kt_cpu_detect", detect_path)
    if detect_spec is None or detect_spec.loader is None or not detect_path.is_file():
        raise WorkerError(f"kt-kernel at {package} has no _cpu_detect.py (kt-kernel 0.7.2 has)")
    detect = importlib.util.module_from_spec(detect_spec)
    detect_spec.loader.exec_module(detect)
    ext, variant = detect.initialize()
    version = "unknown"
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        version = dist_version("kt-kernel")
    except PackageNotFoundError:
        version = "unknown (no installed distribution; loaded from a path)"
    return ext, str(getattr(ext, "__cpu_variant__", variant)), version


def moe_class(ext: Any, method: str) -> Any:
    """The MoE class kt-kernel's wrappers pick for the method (kt_kernel/utils/amx.py)."""
    moe = ext.moe
    if method == "MXFP4":
        forced = os.environ.get("KT_MXFP4_BACKEND", "").strip().lower()
        fast, fallback = (
            getattr(moe, "AMXFP4_KGroup_MOE", None),
            getattr(moe, "AVX2MXFP4_MOE", None),
        )
        chosen = {"amx": fast, "avx2": fallback}.get(forced, fast or fallback)
    elif method == "AMXINT4":
        chosen = getattr(moe, "AMXInt4_MOE", None)
    elif method == "AMXINT8":
        chosen = getattr(moe, "AMXInt8_MOE", None)
    elif method == "BF16":
        chosen = getattr(moe, "AMXBF16_MOE", None) or getattr(moe, "AVX2BF16_MOE", None)
    else:
        raise WorkerError(f"method {method!r} cannot be measured; use one of {', '.join(METHODS)}")
    if chosen is None:
        raise WorkerError(f"this kt-kernel build has no {method} kernel for this CPU")
    return chosen
