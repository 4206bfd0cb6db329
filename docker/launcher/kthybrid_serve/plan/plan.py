"""Plan the server from host, model and image facts: threads, GPU experts, method, env, argv."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from kthybrid_serve.errors import GpuCountError, NoGpuError, WeightFormatError
from kthybrid_serve.host.host import HostFacts
from kthybrid_serve.model.experts import cpu_expert_bytes, decode_ceiling, expert_shape
from kthybrid_serve.model.model import ModelFacts
from kthybrid_serve.model.weights import CpuWeights
from kthybrid_serve.plan.command import (
    KtFlags,
    default_items,
    numa_prefix,
    plan_env,
    sglang_argv,
)
from kthybrid_serve.plan.gpu_budget import ExpertPlan, GpuRequest, plan_gpu_experts
from kthybrid_serve.plan.items import BudgetLine, PlanItem
from kthybrid_serve.plan.memory import DEFAULT_KERNEL_MEMORY, KernelMemory, host_memory_needed
from kthybrid_serve.plan.method import check_variant, choose_method, kernel_memory
from kthybrid_serve.plan.records import Tuned, ceiling_item, tuned_threads
from kthybrid_serve.plan.runtime_needs import ImageFacts, check_runtime_needs
from kthybrid_serve.plan.targets import Target, TargetData
from kthybrid_serve.plan.threads import ThreadPlan, ThreadRequest, plan_threads
from kthybrid_serve.settings import Settings
from kthybrid_serve.units import gib


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
    # Decode tokens/s the CPU experts allow at the measured bandwidth; None until tuned.
    cpu_decode_ceiling: float | None = None
    # The measured memory of the kernel that serves the CPU experts (plan/memory.py).
    kernel: KernelMemory = DEFAULT_KERNEL_MEMORY


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


def _kt_side(
    host: HostFacts,
    model: ModelFacts,
    weights: CpuWeights,
    settings: Settings,
    gpus_local: int,
    environ: Mapping[str, str],
) -> tuple[PlanItem, ThreadPlan, Tuned | None]:
    method_item = choose_method(host, weights, settings)
    check_variant(host, settings)
    request = thread_request(settings, weights)
    rule = plan_threads(host, request, gpus_local)
    shape = expert_shape(model)
    threads, tuned = tuned_threads(host, shape, method_item.value, request, rule, environ)
    if weights.numa_count is not None and weights.numa_count != len(threads.nodes):
        raise WeightFormatError(
            f"{weights.path} was converted for {weights.numa_count} NUMA node(s) but the plan "
            f"uses {len(threads.nodes)} pool(s); set KTHYBRID_KT_THREADPOOL_COUNT="
            f"{weights.numa_count} or convert again with `kthybrid-serve convert`"
        )
    return method_item, threads, tuned


def thread_request(settings: Settings, weights: CpuWeights) -> ThreadRequest:
    """What the threads are planned from; plan, bench and tune make the same request."""
    return ThreadRequest(
        reserved_cores=settings.reserved_cores,
        cpuinfer=settings.kt_cpuinfer,
        pools=settings.kt_threadpool_count,
        nodes=settings.kt_numa_nodes,
        required_pools=weights.numa_count,
        sources=tuple(settings.sources.items()),
    )


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
    ceiling_value: float | None = None
    if experts.gpu_only:
        items.append(experts.item)
    else:
        method_item, threads, tuned = _kt_side(host, model, weights, settings, gpus_local, environ)
        ceiling = ceiling_item(tuned, expert_shape(model), method_item.value, experts.count)
        if tuned is not None:
            ceiling_value = decode_ceiling(
                tuned.gbps, expert_shape(model), method_item.value, experts.count
            )
        kt = KtFlags(threads, experts.count, method_item.value, weights.path)
        weight_item = PlanItem(
            "--kt-weight-path", weights.path,
            f"{weights.format}, {gib(weights.routed_bytes)} of routed experts",
            _source(settings, "kt_weight_path"),
        )  # fmt: skip
        items += [*threads.items, experts.item, method_item, weight_item, ceiling]
    plan = _assemble(host, model, weights, settings, environ, experts, kt, tp, gpus_local,
                     target, [*items, needs_item])  # fmt: skip
    return replace(plan, cpu_decode_ceiling=ceiling_value)


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
    method = kt.method if kt else None
    kernel = kernel_memory(host.isa_flags, method)
    env, unset, env_items = plan_env(model, method, settings, environ, kernel)
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
        host_memory_needed=host_memory_needed(expert_bytes, kernel, settings.hugepages)
        if kt
        else 0,
        target=target.name if target else None,
        items=tuple(items),
        gpu_budget=experts.budget,
        env=env,
        env_unset=unset,
        argv=tuple(argv),
        notes=host.notes,
        kernel=kernel,
    )
