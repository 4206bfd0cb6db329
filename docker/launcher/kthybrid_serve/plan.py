"""Plan the server from host, model and image facts: threads, GPU experts, method, env, argv."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field

from kthybrid_serve.command import (
    KtFlags,
    default_items,
    numa_prefix,
    plan_env,
    sglang_argv,
)
from kthybrid_serve.errors import (
    CpuIsaError,
    GpuCountError,
    MissingKernelError,
    MissingToolError,
    NoGpuError,
    WeightFormatError,
)
from kthybrid_serve.gpu_budget import ExpertPlan, GpuRequest, plan_gpu_experts
from kthybrid_serve.host import HostFacts
from kthybrid_serve.memory import cpu_expert_bytes, host_memory_needed
from kthybrid_serve.model import CpuWeights, ModelFacts
from kthybrid_serve.plan_items import BudgetLine, PlanItem
from kthybrid_serve.settings import Settings
from kthybrid_serve.targets import Needs, Target, TargetData
from kthybrid_serve.threads import ThreadPlan, ThreadRequest, plan_threads
from kthybrid_serve.units import gib

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


@dataclass(frozen=True)
class Plan:
    kt_cpuinfer: int | None
    kt_threadpool_count: int | None
    kt_numa_nodes: tuple[int, ...]
    threads_per_pool: tuple[int, ...]
    kt_num_gpu_experts: int
    max_gpu_experts: int
    kt_method: str | None
    kt_weight_path: str | None
    gpu_only: bool
    tp_size: int
    gpus_used: int
    cpu_expert_bytes: int
    host_memory_needed: int
    target: str | None
    items: tuple[PlanItem, ...]
    gpu_budget: tuple[BudgetLine, ...]
    env: dict[str, str]
    env_unset: tuple[str, ...]
    argv: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


def has_flags(host: HostFacts, flags: tuple[str, ...]) -> bool:
    return all(flag in host.isa_flags for flag in flags)


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
        else:
            missing = [f for f in AVX512_BF16_FLAGS if f not in host.isa_flags]
            why = f"MXFP4 checkpoint; AVX2 fallback kernel (no {', '.join(missing)}: slower)"
        if has_flags(host, AMX_FLAGS):
            why += "; AMX present: AMXINT4 (`kthybrid-serve convert`) may be faster"
        return PlanItem("--kt-method", "MXFP4", why, source)
    if fmt in {"BF16", "FP8"}:
        return PlanItem("--kt-method", fmt, f"weights are {fmt}", source)
    raise WeightFormatError(
        f"cannot tell the format of the CPU expert weights in {weights.path}; set --kt-method"
    )


def _check_variant(host: HostFacts, settings: Settings) -> None:
    variant = settings.kt_cpu_variant
    if variant is not None and not has_flags(host, VARIANT_FLAGS[variant]):
        missing = [f for f in VARIANT_FLAGS[variant] if f not in host.isa_flags]
        raise CpuIsaError(
            f"--kt-cpu-variant {variant} needs {', '.join(missing)}, which this CPU lacks; "
            "leave KTHYBRID_KT_CPU_VARIANT unset so kt-kernel picks what the CPU has"
        )


def _tp(host: HostFacts, settings: Settings) -> tuple[int, int]:
    """(tp, GPUs used on this node)."""
    nnodes = settings.nnodes
    tp = settings.tp_size or len(host.gpus) * nnodes
    if tp % nnodes:
        raise GpuCountError(f"KTHYBRID_TP_SIZE={tp} is not divisible by KTHYBRID_NNODES={nnodes}")
    local = tp // nnodes
    if local > len(host.gpus):
        raise GpuCountError(
            f"tp-size {tp} over {nnodes} node(s) needs {local} GPUs here but {len(host.gpus)} "
            "were found; lower KTHYBRID_TP_SIZE or expose more GPUs"
        )
    return tp, local


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
    for what, need in needs:
        if need.python_module and need.python_module not in image.modules:
            raise MissingKernelError(
                f"{what} imports {need.python_module}, which this image lacks ({need.why}); "
                f"the server would fail after minutes of loading. Serve {model.model_type} on "
                "a GPU of another target (sm89, sm100, sm120) or add a working "
                f"{need.python_module} wheel to the image"
            )
        if need.nvcc and image.nvcc is None:
            raise MissingToolError(
                f"{what} compiles CUDA kernels with nvcc at run time ({need.why}) and this "
                f"image has no nvcc (built without the CUDA toolchain image); {REBUILD_WITH_NVCC}"
            )
    shown = ", ".join(what for what, _ in needs) or "none"
    return PlanItem("runtime needs", "met", f"nvcc at {image.nvcc}; checked: {shown}")


def _kt_side(
    host: HostFacts,
    weights: CpuWeights,
    settings: Settings,
    gpus_local: int,
) -> tuple[PlanItem, ThreadPlan]:
    method_item = choose_method(host, weights, settings)
    _check_variant(host, settings)
    request = ThreadRequest(
        reserved_cores=settings.reserved_cores,
        cpuinfer=settings.kt_cpuinfer,
        pools=settings.kt_threadpool_count,
        nodes=settings.kt_numa_nodes,
        required_pools=weights.numa_count,
        sources=tuple(settings.sources.items()),
    )
    threads = plan_threads(host, request, gpus_local)
    if weights.numa_count is not None and weights.numa_count != len(threads.nodes):
        raise WeightFormatError(
            f"{weights.path} was converted for {weights.numa_count} NUMA node(s) but the plan "
            f"uses {len(threads.nodes)} pool(s); set KTHYBRID_KT_THREADPOOL_COUNT="
            f"{weights.numa_count} or convert again with `kthybrid-serve convert`"
        )
    return method_item, threads


def _gpu_request(settings: Settings) -> GpuRequest:
    return GpuRequest(
        mem_fraction_static=settings.mem_fraction_static,
        cuda_graph_bs=settings.cuda_graph_bs,
        mtp=settings.mtp,
        context_length=settings.context_length,
        max_running_requests=settings.max_running_requests,
        chunked_prefill_size=settings.chunked_prefill_size,
        prefill_threshold=settings.kt_gpu_prefill_token_threshold,
        num_gpu_experts=settings.kt_num_gpu_experts,
        num_gpu_experts_source=settings.source("kt_num_gpu_experts"),
    )


def _source(settings: Settings, dest: str) -> str:
    return settings.source(dest) if settings.overridden(dest) else "planned"


def make_plan(
    host: HostFacts,
    model: ModelFacts,
    weights: CpuWeights,
    settings: Settings,
    data: TargetData,
    environ: Mapping[str, str],
    image: ImageFacts | None = None,
) -> Plan:
    """The whole plan; raises a LauncherError subclass when no plan can work."""
    if not host.gpus:
        why = "; ".join(n for n in host.notes if "NVML" in n or "nvidia-ml-py" in n)
        raise NoGpuError(
            "no NVIDIA GPU found" + (f" ({why})" if why else "")
            + "; start the container with GPUs (--gpus all / the NVIDIA runtime) "
            "or plan for another machine with --gpu 'NAME,MEMORY,CC'"
        )  # fmt: skip
    image = image or ImageFacts(None, None, frozenset())
    tp, gpus_local = _tp(host, settings)
    experts = plan_gpu_experts(host.gpus[:gpus_local], model, _gpu_request(settings), tp)
    target = data.for_cc(host.gpus[0].cc_text)
    chunk_reaches = settings.chunked_prefill_size >= settings.kt_gpu_prefill_token_threshold
    needs_item = check_runtime_needs(target, model, data, image, experts.gpu_only or chunk_reaches)
    items: list[PlanItem] = []
    kt: KtFlags | None = None
    if experts.gpu_only:
        items.append(experts.item)
    else:
        method_item, threads = _kt_side(host, weights, settings, gpus_local)
        kt = KtFlags(threads, experts.count, method_item.value, weights.path)
        weight_item = PlanItem(
            "--kt-weight-path", weights.path,
            f"{weights.format}, {gib(weights.routed_bytes)} of routed experts",
            _source(settings, "kt_weight_path"),
        )  # fmt: skip
        items += [*threads.items, experts.item, method_item, weight_item]
    return _assemble(host, model, weights, settings, environ, experts, kt, tp, gpus_local,
                     target, [*items, needs_item])  # fmt: skip


def _assemble(
    host: HostFacts,
    model: ModelFacts,
    weights: CpuWeights,
    settings: Settings,
    environ: Mapping[str, str],
    experts: ExpertPlan,
    kt: KtFlags | None,
    tp: int,
    gpus_local: int,
    target: Target | None,
    items: list[PlanItem],
) -> Plan:
    env, unset, env_items = plan_env(model, kt.method if kt else None, settings, environ)
    prefix: list[str] = []
    if kt is None:
        numa_why = "GPU-only: no CPU experts to place"
    else:
        prefix, numa_why = numa_prefix(settings.numa_policy, host, kt.threads.nodes)
    argv = prefix + sglang_argv(model, settings, kt, tp)
    expert_bytes = cpu_expert_bytes(weights, on_cpu=kt is not None)
    items += [
        PlanItem("--tensor-parallel-size", str(tp), f"{len(host.gpus)} GPU(s) x "
                 f"{settings.nnodes} node(s)", _source(settings, "tp_size")),
        PlanItem("numactl", " ".join(prefix) or "(none)", numa_why,
                 _source(settings, "numa_policy")),
        *env_items,
        *default_items(settings),
    ]  # fmt: skip
    if model.revision is not None:
        items.append(PlanItem("model revision", model.revision, "recorded by `hf download`"))
    return Plan(
        kt_cpuinfer=kt.threads.cpuinfer if kt else None,
        kt_threadpool_count=len(kt.threads.nodes) if kt else None,
        kt_numa_nodes=kt.threads.nodes if kt else (),
        threads_per_pool=kt.threads.per_pool if kt else (),
        kt_num_gpu_experts=experts.count,
        max_gpu_experts=experts.max_fit,
        kt_method=kt.method if kt else None,
        kt_weight_path=kt.weight_path if kt else None,
        gpu_only=kt is None,
        tp_size=tp,
        gpus_used=gpus_local,
        cpu_expert_bytes=expert_bytes,
        host_memory_needed=host_memory_needed(expert_bytes) if kt else 0,
        target=target.name if target else None,
        items=tuple(items),
        gpu_budget=experts.budget,
        env=env,
        env_unset=unset,
        argv=tuple(argv),
        notes=host.notes,
    )
