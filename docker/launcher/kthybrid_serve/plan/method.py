"""The CPU expert kernel: which kt-kernel method the weights and this CPU allow."""

from __future__ import annotations

from kthybrid_serve.errors import CpuIsaError, WeightFormatError
from kthybrid_serve.host.host import HostFacts
from kthybrid_serve.model.weights import CpuWeights
from kthybrid_serve.plan.items import PlanItem
from kthybrid_serve.plan.memory import (
    AVX2_MXFP4_KERNEL_MEMORY,
    DEFAULT_KERNEL_MEMORY,
    KernelMemory,
)
from kthybrid_serve.settings import Settings

AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16", "avx512f", "avx512bw")
AVX512_BF16_FLAGS = ("avx512f", "avx512bw", "avx512_bf16")
VARIANT_FLAGS: dict[str, tuple[str, ...]] = {
    "amx": (*AMX_FLAGS, "avx512_vnni", "avx512_vbmi", "avx512_bf16"),
    "avx512_bf16": ("avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi", "avx512_bf16"),
    "avx512_vbmi": ("avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi"),
    "avx512_vnni": ("avx512f", "avx512bw", "avx512_vnni"),
    "avx512_base": ("avx512f", "avx512bw"),
    "avx2": ("avx2",),
}
# kt-kernel's MXFP4 kernel AMXFP4_KGroup_MOE is in every AVX-512 variant (its avx512_base,
# _vnni, _vbmi, _bf16 and amx builds pick it; measured on the AMX host with each variant forced,
# bench/results/hugepages-amx-h200host-*.json); only the avx2 build has AVX2MXFP4_MOE instead.
AVX512_MXFP4_FLAGS = VARIANT_FLAGS["avx512_base"]


def has_flags(host: HostFacts, flags: tuple[str, ...]) -> bool:
    return all(flag in host.isa_flags for flag in flags)


def avx2_mxfp4_kernel(isa_flags: frozenset[str] | set[str], method: str | None) -> bool:
    """Whether kt-kernel serves `method` with its AVX2 MXFP4 kernel (AVX2MXFP4_MOE): MXFP4 on
    a CPU without AVX512F+AVX512BW. That kernel keeps more memory (plan/memory.py)."""
    return method == "MXFP4" and not all(f in isa_flags for f in AVX512_MXFP4_FLAGS)


def kernel_memory(isa_flags: frozenset[str] | set[str], method: str | None) -> KernelMemory:
    """The measured memory of the kernel that serves `method` on a CPU with these flags."""
    if avx2_mxfp4_kernel(isa_flags, method):
        return AVX2_MXFP4_KERNEL_MEMORY
    return DEFAULT_KERNEL_MEMORY


def _method_mismatch(wanted: str, weights: CpuWeights) -> WeightFormatError:
    if wanted in {"AMXINT4", "AMXINT8"} and weights.format == "MXFP4":
        return WeightFormatError(
            f"--kt-method {wanted} needs converted weights but {weights.path} holds the MXFP4 "
            "checkpoint; run `kthybrid-serve convert` and set KTHYBRID_KT_WEIGHT_PATH to its "
            "output, or use --kt-method MXFP4"
        )
    return WeightFormatError(
        f"--kt-method {wanted} does not match the {weights.format} weights in {weights.path}; "
        f"use --kt-method {weights.format} or point KTHYBRID_KT_WEIGHT_PATH at {wanted} weights"
    )


def choose_method(host: HostFacts, weights: CpuWeights, settings: Settings) -> PlanItem:
    fmt, wanted = weights.format, settings.kt_method
    if wanted is not None and wanted != fmt:
        raise _method_mismatch(wanted, weights)
    source = settings.source("kt_method") if wanted is not None else "planned"
    if fmt in {"AMXINT4", "AMXINT8"}:
        if not has_flags(host, AMX_FLAGS):
            raise CpuIsaError(
                f"{fmt} weights in {weights.path} need a CPU with AMX (amx_tile, amx_int8); this "
                f"CPU ({host.cpu_model}) has none; serve the original checkpoint with "
                "--kt-method MXFP4 --kt-weight-path <model dir> instead"
            )
        return PlanItem("--kt-method", fmt, f"weights are {fmt}; the CPU has AMX", source)
    if fmt in {"MXFP4", "BF16", "FP8"} and "avx2" not in host.isa_flags:
        raise CpuIsaError(
            f"{fmt} CPU experts need at least AVX2 and this CPU ({host.cpu_model}) lacks it; "
            "no kt-kernel method works on this CPU"
        )
    if fmt == "MXFP4":
        if has_flags(host, AVX512_BF16_FLAGS):
            why = "MXFP4 checkpoint; AVX512-BF16 fast path available"
        elif has_flags(host, AVX512_MXFP4_FLAGS):
            why = "MXFP4 checkpoint; kt-kernel's AVX-512 MXFP4 kernel (as with AVX512-BF16)"
        else:
            missing = [f for f in AVX512_MXFP4_FLAGS if f not in host.isa_flags]
            why = (
                f"MXFP4 checkpoint; AVX2 fallback kernel (no {', '.join(missing)}: slower, and "
                f"it keeps {AVX2_MXFP4_KERNEL_MEMORY.overhead:.0%} over the expert bytes in RAM)"
            )
        if has_flags(host, AMX_FLAGS):
            why += "; AMX present: AMXINT4 (`kthybrid-serve convert`) may be faster"
        return PlanItem("--kt-method", "MXFP4", why, source)
    if fmt in {"BF16", "FP8"}:
        return PlanItem("--kt-method", fmt, f"weights are {fmt}", source)
    raise WeightFormatError(
        f"cannot tell the format of the CPU expert weights in {weights.path}; set --kt-method"
    )


def check_variant(host: HostFacts, settings: Settings) -> None:
    variant = settings.kt_cpu_variant
    if variant is not None and not has_flags(host, VARIANT_FLAGS[variant]):
        missing = [f for f in VARIANT_FLAGS[variant] if f not in host.isa_flags]
        raise CpuIsaError(
            f"--kt-cpu-variant {variant} needs {', '.join(missing)}, which this CPU lacks; "
            "leave KTHYBRID_KT_CPU_VARIANT unset so kt-kernel picks what the CPU has"
        )
