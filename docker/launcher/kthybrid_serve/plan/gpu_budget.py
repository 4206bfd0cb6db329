"""The per-GPU memory budget: what sglang-kt 0.7.2 puts on each GPU, and how many experts fit."""

from __future__ import annotations

from dataclasses import dataclass

from kthybrid_serve.errors import GpuMemoryError
from kthybrid_serve.host.gpus import Gpu
from kthybrid_serve.model.model import ModelFacts
from kthybrid_serve.plan.items import BudgetLine, PlanItem
from kthybrid_serve.units import gib

KV_BYTES_PER_ELEMENT = 2  # BF16 KV cache: the upper bound of what sglang allocates


@dataclass(frozen=True)
class GpuRequest:
    """The settings the GPU budget depends on, as explicit arguments."""

    mem_fraction_static: float
    cuda_graph_bs: tuple[int, ...]
    mtp: bool
    context_length: int
    max_running_requests: int
    chunked_prefill_size: int
    prefill_threshold: int
    num_gpu_experts: int | None = None
    num_gpu_experts_source: str = "planned"


@dataclass(frozen=True)
class ExpertPlan:
    count: int
    max_fit: int
    budget: tuple[BudgetLine, ...]
    item: PlanItem
    gpu_only: bool  # every routed expert sits on the GPUs: no CPU experts, no KT


def kv_bytes_per_token(model: ModelFacts, tp: int) -> tuple[int, str]:
    """Upper bound of KV cache bytes per token on one GPU, with how it was estimated."""
    layers = model.num_layers
    if model.kv_lora_rank:
        per_layer = (model.kv_lora_rank + model.qk_rope_head_dim) * KV_BYTES_PER_ELEMENT
        return per_layer * layers, "MLA latent + rope, replicated on every rank"
    if model.model_type == "deepseek_v4":
        # One shared latent of head_dim per token; compressed layers store less.
        return model.head_dim * model.kv_heads * KV_BYTES_PER_ELEMENT * layers, (
            "one latent of head_dim per token and layer (compressed layers store less)"
        )
    heads = max(1, model.kv_heads // tp) if model.kv_heads >= tp else 1
    return 2 * heads * model.head_dim * KV_BYTES_PER_ELEMENT * layers, "K and V per KV head"


def _fixed_lines(gpu: Gpu, model: ModelFacts, request: GpuRequest, tp: int) -> list[BudgetLine]:
    """Everything on a GPU but the routed experts of the main layers."""
    frac = request.mem_fraction_static
    static = int(gpu.memory_bytes * frac)
    graphs = ",".join(map(str, request.cuda_graph_bs))
    lines = [
        BudgetLine(f"GPU memory ({gpu.name})", gpu.memory_bytes, "smallest GPU used"),
        BudgetLine(f"outside the static pool ({1 - frac:.0%})", static - gpu.memory_bytes,
                   f"activations, CUDA graphs (bs {graphs}), NCCL: sglang keeps this free"),
        BudgetLine("non-expert weights", -(model.other_bytes // tp),
                   f"{gib(model.other_bytes)} / TP {tp}"),
    ]  # fmt: skip
    if request.mtp:
        lines += [
            BudgetLine("MTP draft layer", -(model.mtp_other_bytes // tp),
                       "NextN head, non-expert part"),
            BudgetLine("MTP draft experts", -(model.mtp_routed_bytes // tp),
                       "sglang-kt builds the draft with KT offload off: all its routed experts "
                       "sit on the GPU"),
        ]  # fmt: skip
    per_token, how = kv_bytes_per_token(model, tp)
    tokens = request.context_length * request.max_running_requests
    lines.append(
        BudgetLine("KV cache", -per_token * tokens,
                   f"{request.context_length} tokens x {request.max_running_requests} requests "
                   f"x {per_token // 1024} KiB/token ({how})")
    )  # fmt: skip
    return lines


def _prefill_line(model: ModelFacts, request: GpuRequest, tp: int) -> BudgetLine | None:
    chunk, threshold = request.chunked_prefill_size, request.prefill_threshold
    if chunk < threshold:
        return None
    return BudgetLine(
        "full-GPU prefill layer",
        -(model.bytes_per_expert * model.routed_experts // tp),
        f"one MoE layer's experts, loaded when a chunk of {chunk} tokens reaches the "
        f"threshold {threshold}",
    )


def _short(gpu: Gpu, left: int, frac: float) -> GpuMemoryError:
    return GpuMemoryError(
        f"{gpu.name} ({gib(gpu.memory_bytes)}) cannot hold the non-expert weights and KV "
        f"cache: {gib(-left)} short at mem-fraction-static {frac}; lower "
        "KTHYBRID_CONTEXT_LENGTH or KTHYBRID_MAX_RUNNING_REQUESTS, raise "
        "KTHYBRID_MEM_FRACTION_STATIC, or add GPUs (KTHYBRID_TP_SIZE)"
    )


def plan_gpu_experts(
    gpus: tuple[Gpu, ...], model: ModelFacts, request: GpuRequest, tp: int
) -> ExpertPlan:
    gpu = min(gpus, key=lambda g: (g.memory_bytes, g.index))
    lines = _fixed_lines(gpu, model, request, tp)
    per_expert = max(1, model.bytes_per_expert * model.moe_layers // tp)
    left_all = sum(line.amount for line in lines)
    wanted = request.num_gpu_experts
    all_fit = left_all >= per_expert * model.routed_experts and left_all >= 0
    if all_fit and (wanted is None or wanted >= model.routed_experts):
        cost = per_expert * model.routed_experts
        lines.append(
            BudgetLine(
                "routed experts, all layers",
                -cost,
                f"{model.routed_experts} x {gib(per_expert)} per expert",
            )
        )
        why = (
            f"all {model.routed_experts} routed experts fit on the GPU(s) with "
            f"{gib(left_all - cost)} to spare: GPU-only, no CPU experts, no KT flags"
        )
        item = PlanItem("--kt-num-gpu-experts", "(none: GPU-only)", why)
        return ExpertPlan(model.routed_experts, model.routed_experts, tuple(lines), item, True)
    prefill = _prefill_line(model, request, tp)
    if prefill is not None:
        lines.append(prefill)
    left = sum(line.amount for line in lines)
    if left < 0:
        raise _short(gpu, left, request.mem_fraction_static)
    max_fit = min(model.routed_experts, left // per_expert)
    lines.append(BudgetLine("left for GPU experts", left,
                            f"one expert in all {model.moe_layers} MoE layers costs "
                            f"{gib(per_expert)} per GPU"))  # fmt: skip
    if wanted is not None:
        if wanted > max_fit:
            raise GpuMemoryError(
                f"--kt-num-gpu-experts {wanted} needs {gib(wanted * per_expert)} per GPU but "
                f"{gib(left)} is left after weights and KV cache; at most {max_fit} fit"
            )
        item = PlanItem("--kt-num-gpu-experts", str(wanted), f"override; {max_fit} would fit",
                        request.num_gpu_experts_source)  # fmt: skip
        return ExpertPlan(wanted, max_fit, tuple(lines), item, False)
    why = (
        f"{gib(left)} left / {gib(per_expert)} per expert in all layers = {max_fit} of "
        f"{model.routed_experts} per layer (set explicitly: without it sglang-kt disables KT)"
    )
    item = PlanItem("--kt-num-gpu-experts", str(max_fit), why)
    return ExpertPlan(max_fit, max_fit, tuple(lines), item, False)
