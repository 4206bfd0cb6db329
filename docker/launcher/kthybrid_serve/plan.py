"""Plan the server from host and model facts: threads, pools, GPU experts, method, env, argv."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kthybrid_serve.errors import (
    CpuIsaError,
    CpuTopologyError,
    GpuCountError,
    GpuMemoryError,
    NoGpuError,
    WeightFormatError,
)
from kthybrid_serve.host import HostFacts
from kthybrid_serve.model import CpuWeights, ModelFacts
from kthybrid_serve.settings import Settings
from kthybrid_serve.targets import Target, target_for_cc
from kthybrid_serve.units import GIB, gib

# Launcher rules (ours, not upstream's), kept in one place so the README can cite them.
PROCESSES_PER_NODE = 2  # HTTP server + tokenizer, detokenizer; plus one scheduler per GPU
HOST_OVERHEAD_BYTES = 8 * GIB  # Python processes, torch, pinned staging buffers
HOST_OVERHEAD_FRACTION = 0.05  # kt-kernel's per-pool buffers and loader copies
KV_BYTES_PER_ELEMENT = 2  # BF16 KV cache: the upper bound of what sglang allocates

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


@dataclass(frozen=True)
class PlanItem:
    """One planned value, with the reason for it and where it came from."""

    name: str
    value: str
    reason: str
    source: str = "planned"


@dataclass(frozen=True)
class BudgetLine:
    label: str
    amount: int
    note: str = ""


@dataclass(frozen=True)
class ThreadPlan:
    cpuinfer: int
    nodes: tuple[int, ...]
    per_pool: tuple[int, ...]
    items: tuple[PlanItem, ...]


@dataclass(frozen=True)
class ExpertPlan:
    count: int
    max_fit: int
    budget: tuple[BudgetLine, ...]
    item: PlanItem


@dataclass(frozen=True)
class Plan:
    kt_cpuinfer: int
    kt_threadpool_count: int
    kt_numa_nodes: tuple[int, ...]
    threads_per_pool: tuple[int, ...]
    kt_num_gpu_experts: int
    max_gpu_experts: int
    kt_method: str
    kt_weight_path: str
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

    def to_json(self) -> dict[str, Any]:
        return {
            "kt_cpuinfer": self.kt_cpuinfer,
            "kt_threadpool_count": self.kt_threadpool_count,
            "kt_numa_nodes": list(self.kt_numa_nodes),
            "threads_per_pool": list(self.threads_per_pool),
            "kt_num_gpu_experts": self.kt_num_gpu_experts,
            "max_gpu_experts": self.max_gpu_experts,
            "kt_method": self.kt_method,
            "kt_weight_path": self.kt_weight_path,
            "tp_size": self.tp_size,
            "gpus_used": self.gpus_used,
            "cpu_expert_bytes": self.cpu_expert_bytes,
            "host_memory_needed_bytes": self.host_memory_needed,
            "target": self.target,
            "env": dict(self.env),
            "env_unset": list(self.env_unset),
            "argv": list(self.argv),
            "items": [
                {"name": i.name, "value": i.value, "source": i.source, "reason": i.reason}
                for i in self.items
            ],
            "gpu_budget": [
                {"label": b.label, "bytes": b.amount, "note": b.note} for b in self.gpu_budget
            ],
            "notes": list(self.notes),
        }


def has_flags(host: HostFacts, flags: tuple[str, ...]) -> bool:
    return all(flag in host.isa_flags for flag in flags)


def _source(settings: Settings, dest: str) -> str:
    return settings.source(dest) if settings.overridden(dest) else "default"


# -- CPU threads and pools ----------------------------------------------------


def split_threads(cpuinfer: int, pools: int) -> tuple[int, ...]:
    """kt-kernel's split: pool i gets cpuinfer // pools, plus one for the first cpuinfer % pools."""
    return tuple(cpuinfer // pools + (1 if i < cpuinfer % pools else 0) for i in range(pools))


def plan_threads(
    host: HostFacts, settings: Settings, gpus_local: int, required_pools: int | None
) -> ThreadPlan:
    cores = host.physical_cores_by_node()
    total = sum(cores.values())
    reserved: int | None = settings.get("reserved_cores")
    reserved_reason = "given"
    if reserved is None:
        reserved = gpus_local + PROCESSES_PER_NODE
        reserved_reason = (
            f"{gpus_local} GPU scheduler process(es) + {PROCESSES_PER_NODE} for the HTTP "
            "server/tokenizer and detokenizer"
        )
    budget = max(1, total - reserved)

    wanted_nodes: list[int] | None = settings.get("kt_numa_nodes")
    wanted_pools: int | None = settings.get("kt_threadpool_count")
    if wanted_pools is None and required_pools is not None and wanted_nodes is None:
        wanted_pools = required_pools
    by_size = sorted(cores, key=lambda n: (-cores[n], n))

    if wanted_nodes is not None:
        unknown = [n for n in wanted_nodes if n not in cores]
        if unknown:
            raise CpuTopologyError(
                f"--kt-numa-nodes {','.join(map(str, wanted_nodes))}: node(s) "
                f"{','.join(map(str, unknown))} have no allowed CPU cores; nodes with cores: "
                f"{','.join(map(str, cores))}"
            )
        if wanted_pools is not None and wanted_pools != len(wanted_nodes):
            raise CpuTopologyError(
                f"--kt-threadpool-count {wanted_pools} must equal the number of "
                f"--kt-numa-nodes ({len(wanted_nodes)}); kt-kernel maps pool i to node i"
            )
        candidates = [list(wanted_nodes)]
    elif wanted_pools is not None:
        if wanted_pools == 0 or wanted_pools > len(cores):
            raise CpuTopologyError(
                f"--kt-threadpool-count {wanted_pools} but this host allows CPU cores on "
                f"{len(cores)} NUMA node(s); kt-kernel pins one pool per node, so use "
                f"{len(cores)} or fewer (upstream's default of 2 crashes one-node hosts)"
            )
        candidates = [sorted(by_size[:wanted_pools])]
    else:
        candidates = [sorted(by_size[:k]) for k in range(1, len(by_size) + 1)]

    def threads_for(nodes: list[int]) -> int:
        # The slowest pool sets the pace of every MoE layer (each pool computes a slice
        # of every expert), so equal pools: a multiple of the pool count, capped by
        # the smallest node's physical cores.
        per_pool = min(min(cores[n] for n in nodes), max(1, budget // len(nodes)))
        return per_pool * len(nodes)

    # Most threads wins; on a tie, more nodes (more memory bandwidth for the same threads).
    nodes = max(candidates, key=lambda c: (threads_for(c), len(c)))
    cpuinfer = threads_for(nodes)
    items: list[PlanItem] = []

    override = settings.get("kt_cpuinfer")
    if override is not None:
        per_pool_override = split_threads(override, len(nodes))
        for node, threads in zip(nodes, per_pool_override, strict=True):
            if threads > cores[node]:
                raise CpuTopologyError(
                    f"--kt-cpuinfer {override} puts {threads} threads on NUMA node {node}, "
                    f"which has {cores[node]} allowed physical cores; hyperthreads make CPU "
                    f"experts several times slower, use at most {cores[node] * len(nodes)}"
                )
        cpuinfer = override
        items.append(
            PlanItem(
                "--kt-cpuinfer",
                str(cpuinfer),
                f"override; the plan would use {threads_for(nodes)}",
                settings.source("kt_cpuinfer"),
            )
        )
    else:
        limiting = min(nodes, key=lambda n: (cores[n], n))
        smt = " (hyperthreads not counted)" if host.smt_active else ""
        why = (
            f"{total} allowed physical cores{smt} minus {reserved} reserved "
            f"({reserved_reason}) = {budget}"
        )
        if cpuinfer < budget:
            why += (
                f"; equal pools of {cpuinfer // len(nodes)} (node {limiting} has "
                f"{cores[limiting]} cores, the slowest pool sets the pace)"
            )
        if total <= reserved:
            why += "; too few cores to reserve any: the GPU feeders share cores"
        items.append(PlanItem("--kt-cpuinfer", str(cpuinfer), why))

    pools_source = "planned"
    if settings.overridden("kt_threadpool_count"):
        pools_source = settings.source("kt_threadpool_count")
    pools_reason = f"one pool per NUMA node used ({len(nodes)} of {len(cores)} with cores)"
    if required_pools is not None and not settings.overridden("kt_threadpool_count"):
        pools_reason = f"the AMX weights were converted for {required_pools} NUMA node(s)"
    if not settings.overridden("kt_threadpool_count"):
        if len(cores) == 1:
            pools_reason += "; upstream's default of 2 crashes a one-node host"
        elif len(nodes) > 2:
            idle = ",".join(map(str, nodes[2:]))
            pools_reason += (
                f"; 2 pools (upstream's default, the tutorial's command) would pin to nodes "
                f"{nodes[0]},{nodes[1]} only and leave the cores of node(s) {idle} idle"
            )
    items.append(PlanItem("--kt-threadpool-count", str(len(nodes)), pools_reason, pools_source))
    per_pool = split_threads(cpuinfer, len(nodes))
    items.append(
        PlanItem(
            "--kt-numa-nodes",
            " ".join(map(str, nodes)),
            "pool i pinned to node i; threads per pool "
            + ", ".join(f"node {n}: {t}/{cores[n]}" for n, t in zip(nodes, per_pool, strict=True)),
            settings.source("kt_numa_nodes") if settings.overridden("kt_numa_nodes") else "planned",
        )
    )
    return ThreadPlan(cpuinfer, tuple(nodes), per_pool, tuple(items))


# -- CPU kernel -----------------------------------------------------------------


def choose_method(host: HostFacts, weights: CpuWeights, settings: Settings) -> PlanItem:
    fmt = weights.format
    wanted: str | None = settings.get("kt_method")
    amx = has_flags(host, AMX_FLAGS)
    if wanted is not None and wanted != fmt:
        if wanted in {"AMXINT4", "AMXINT8"} and fmt == "MXFP4":
            raise WeightFormatError(
                f"--kt-method {wanted} needs converted weights but {weights.path} holds the MXFP4 "
                "checkpoint; run `kthybrid-serve convert` and set --kt-weight-path to its output, "
                "or use --kt-method MXFP4"
            )
        raise WeightFormatError(
            f"--kt-method {wanted} does not match the {fmt} weights in {weights.path}; "
            f"use --kt-method {fmt} or point --kt-weight-path at {wanted} weights"
        )
    source = settings.source("kt_method") if wanted is not None else "planned"
    if fmt in {"AMXINT4", "AMXINT8"}:
        if not amx:
            raise CpuIsaError(
                f"{fmt} weights in {weights.path} need a CPU with AMX (amx_tile, amx_int8); this "
                f"CPU ({host.cpu_model}) has none; serve the original checkpoint with "
                "--kt-method MXFP4 --kt-weight-path <model dir> instead"
            )
        return PlanItem("--kt-method", fmt, f"weights are {fmt}; the CPU has AMX", source)
    if fmt == "MXFP4":
        if has_flags(host, AVX512_BF16_FLAGS):
            why = "MXFP4 checkpoint; AVX512-BF16 fast path available"
        elif "avx2" in host.isa_flags:
            missing = [f for f in AVX512_BF16_FLAGS if f not in host.isa_flags]
            why = f"MXFP4 checkpoint; AVX2 fallback kernel (no {', '.join(missing)}: slower)"
        else:
            raise CpuIsaError(
                f"MXFP4 CPU experts need at least AVX2 and this CPU ({host.cpu_model}) lacks it; "
                "no kt-kernel method works on this CPU"
            )
        if amx:
            why += "; AMX present: AMXINT4 (`kthybrid-serve convert`) may be faster"
        return PlanItem("--kt-method", "MXFP4", why, source)
    if fmt in {"BF16", "FP8"}:
        if "avx2" not in host.isa_flags:
            raise CpuIsaError(f"{fmt} CPU experts need at least AVX2; this CPU lacks it")
        return PlanItem("--kt-method", fmt, f"weights are {fmt}", source)
    raise WeightFormatError(
        f"cannot tell the format of the CPU expert weights in {weights.path}; set --kt-method"
    )


# -- GPU experts ------------------------------------------------------------------


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


def plan_gpu_experts(
    host: HostFacts, model: ModelFacts, settings: Settings, tp: int, gpus_local: int
) -> ExpertPlan:
    gpus = host.gpus[:gpus_local]
    gpu = min(gpus, key=lambda g: (g.memory_bytes, g.index))
    frac = float(settings.get("mem_fraction_static"))
    static = int(gpu.memory_bytes * frac)
    lines = [
        BudgetLine(f"GPU memory ({gpu.name})", gpu.memory_bytes, "smallest GPU used"),
        BudgetLine(
            f"outside the static pool ({1 - frac:.0%})",
            static - gpu.memory_bytes,
            "activations, CUDA graphs (bs "
            + ",".join(map(str, settings.get("cuda_graph_bs")))
            + "), NCCL: sglang keeps this free",
        ),
    ]
    non_expert = model.other_bytes // tp
    lines.append(
        BudgetLine("non-expert weights", -non_expert, f"{gib(model.other_bytes)} / TP {tp}")
    )
    if settings.get("mtp"):
        draft = model.mtp_other_bytes // tp
        lines.append(BudgetLine("MTP draft layer", -draft, "NextN head, non-expert part"))
    per_token, how = kv_bytes_per_token(model, tp)
    tokens = int(settings.get("context_length")) * int(settings.get("max_running_requests"))
    kv = per_token * tokens
    lines.append(
        BudgetLine(
            "KV cache",
            -kv,
            f"{settings.get('context_length')} tokens x {settings.get('max_running_requests')} "
            f"requests x {per_token // 1024} KiB/token ({how})",
        )
    )
    threshold = int(settings.get("kt_gpu_prefill_token_threshold"))
    chunk = int(settings.get("chunked_prefill_size"))
    if threshold > 0 and chunk >= threshold:
        layer = model.bytes_per_expert * model.routed_experts // tp
        lines.append(
            BudgetLine(
                "full-GPU prefill layer",
                -layer,
                f"one MoE layer's experts, loaded when a chunk of {chunk} tokens reaches the "
                f"threshold {threshold}",
            )
        )
    left = sum(line.amount for line in lines)
    per_expert_all_layers = model.bytes_per_expert * model.moe_layers
    per_gpu_cost = max(1, per_expert_all_layers // tp)
    max_fit = max(0, min(model.routed_experts, left // per_gpu_cost)) if left > 0 else 0
    lines.append(
        BudgetLine(
            "left for GPU experts",
            left,
            f"one expert in all {model.moe_layers} MoE layers costs {gib(per_gpu_cost)} per GPU",
        )
    )
    if left < 0:
        raise GpuMemoryError(
            f"{gpu.name} ({gib(gpu.memory_bytes)}) cannot hold the non-expert weights and KV "
            f"cache: {gib(-left)} short at mem-fraction-static {frac}; lower "
            "KTHYBRID_CONTEXT_LENGTH/KTHYBRID_MAX_RUNNING_REQUESTS, raise "
            "KTHYBRID_MEM_FRACTION_STATIC, or add GPUs (KTHYBRID_TP_SIZE)"
        )
    override = settings.get("kt_num_gpu_experts")
    if override is not None:
        if override > max_fit:
            raise GpuMemoryError(
                f"--kt-num-gpu-experts {override} needs {gib(override * per_gpu_cost)} per GPU "
                f"but {gib(left)} is left after weights and KV cache; at most {max_fit} fit"
            )
        item = PlanItem(
            "--kt-num-gpu-experts",
            str(override),
            f"override; {max_fit} would fit",
            settings.source("kt_num_gpu_experts"),
        )
        return ExpertPlan(override, max_fit, tuple(lines), item)
    why = (
        f"{gib(left)} left / {gib(per_gpu_cost)} per expert in all layers = {max_fit} "
        f"of {model.routed_experts} per layer (set explicitly: without it sglang-kt disables KT)"
    )
    item = PlanItem("--kt-num-gpu-experts", str(max_fit), why)
    return ExpertPlan(max_fit, max_fit, tuple(lines), item)


# -- host memory, environment, command ------------------------------------------


def cpu_expert_bytes(model: ModelFacts, weights: CpuWeights, mtp: bool) -> int:
    # kt-kernel keeps every expert in host memory, GPU-resident ones included, so
    # that dynamic expert updates can swap them.
    return weights.routed_bytes + (model.mtp_routed_bytes if mtp else 0)


def host_memory_needed(expert_bytes: int) -> int:
    return expert_bytes + int(expert_bytes * HOST_OVERHEAD_FRACTION) + HOST_OVERHEAD_BYTES


def plan_env(
    model: ModelFacts,
    method: str,
    target: Target | None,
    settings: Settings,
    environ: Mapping[str, str],
) -> tuple[dict[str, str], tuple[str, ...], list[PlanItem]]:
    env: dict[str, str] = {}
    unset: list[str] = []
    items: list[PlanItem] = []
    for name, value in (
        ("TORCH_CUDA_ARCH_LIST", target.torch_cuda_arch_list if target else ""),
        ("FLASHINFER_CUDA_ARCH_LIST", target.flashinfer_cuda_arch_list if target else ""),
    ):
        if environ.get(name):
            env[name] = environ[name]
            items.append(PlanItem(name, environ[name], "set by the image; kept", "env"))
        elif value:
            env[name] = value
            items.append(PlanItem(name, value, f"from the {target.name if target else ''} target"))
    if model.model_type == "deepseek_v4":
        mode = environ.get("SGLANG_DSV4_MODE") or "2604"
        env["SGLANG_DSV4_MODE"] = mode
        items.append(
            PlanItem(
                "SGLANG_DSV4_MODE",
                mode,
                "DeepSeek-V4 checkpoint layout",
                "env" if environ.get("SGLANG_DSV4_MODE") else "planned",
            )
        )
        if method == "MXFP4":
            env["SGLANG_DSV4_2604_SUBMODE"] = "2604B"
            items.append(
                PlanItem("SGLANG_DSV4_2604_SUBMODE", "2604B", "MXFP4 experts (SwiGLU clamp 10)")
            )
        elif "SGLANG_DSV4_2604_SUBMODE" in environ:
            unset.append("SGLANG_DSV4_2604_SUBMODE")
            items.append(
                PlanItem(
                    "SGLANG_DSV4_2604_SUBMODE",
                    "(unset)",
                    f"2604B is only valid with MXFP4; kt-kernel refuses it with {method}",
                )
            )
    variant = settings.get("kt_cpu_variant")
    if variant is not None:
        env["KT_KERNEL_CPU_VARIANT"] = variant
        items.append(
            PlanItem("KT_KERNEL_CPU_VARIANT", variant, "forced", settings.source("kt_cpu_variant"))
        )
    return env, tuple(unset), items


def numa_prefix(policy: str, nodes: tuple[int, ...]) -> list[str]:
    if policy == "interleave":
        return ["numactl", "--interleave=all"]
    if policy == "local":
        joined = ",".join(map(str, nodes))
        return ["numactl", f"--cpunodebind={joined}", "--localalloc"]
    return []


def sglang_argv(
    model: ModelFacts,
    settings: Settings,
    threads: ThreadPlan,
    experts: int,
    method: str,
    weight_path: str,
    tp: int,
) -> list[str]:
    s = settings.get
    argv = [
        sys.executable, "-m", "sglang.launch_server",
        "--host", str(s("host")),
        "--port", str(s("port")),
        "--model-path", model.path,
        "--served-model-name", str(s("served_model_name") or model.served_name),
        "--trust-remote-code",
        "--kt-weight-path", weight_path,
        "--kt-method", method,
        "--kt-num-gpu-experts", str(experts),
        "--kt-cpuinfer", str(threads.cpuinfer),
        "--kt-threadpool-count", str(len(threads.nodes)),
        "--kt-numa-nodes", *map(str, threads.nodes),
        "--kt-gpu-prefill-token-threshold", str(s("kt_gpu_prefill_token_threshold")),
    ]  # fmt: skip
    if s("kt_enable_dynamic_expert_update"):
        argv.append("--kt-enable-dynamic-expert-update")
    argv += [
        "--tensor-parallel-size", str(tp),
        "--context-length", str(s("context_length")),
        "--attention-backend", str(s("attention_backend")),
        "--mem-fraction-static", str(s("mem_fraction_static")),
        "--chunked-prefill-size", str(s("chunked_prefill_size")),
        "--max-prefill-tokens", str(s("max_prefill_tokens")),
        "--max-running-requests", str(s("max_running_requests")),
        "--watchdog-timeout", str(s("watchdog_timeout")),
        "--cuda-graph-bs", *map(str, s("cuda_graph_bs")),
        "--cuda-graph-max-bs", str(max(s("cuda_graph_bs"))),
    ]  # fmt: skip
    for dest, flag in (
        ("disable_shared_experts_fusion", "--disable-shared-experts-fusion"),
        ("disable_radix_cache", "--disable-radix-cache"),
        ("skip_server_warmup", "--skip-server-warmup"),
    ):
        if s(dest):
            argv.append(flag)
    if s("mtp"):
        argv += [
            "--speculative-algorithm", "EAGLE",
            "--speculative-num-steps", "3",
            "--speculative-eagle-topk", "1",
            "--speculative-num-draft-tokens", "4",
            "--speculative-moe-runner-backend", "auto",
        ]  # fmt: skip
    if int(s("nnodes")) > 1:
        argv += ["--nnodes", str(s("nnodes")), "--node-rank", str(s("node_rank"))]
        if s("dist_init_addr"):
            argv += ["--dist-init-addr", str(s("dist_init_addr"))]
    return argv + settings.extra_args


def _default_items(settings: Settings) -> list[PlanItem]:
    """sglang flags that come from the tested tutorial command unless overridden."""
    shown = (
        "context_length", "chunked_prefill_size", "max_prefill_tokens", "max_running_requests",
        "watchdog_timeout", "attention_backend", "mem_fraction_static", "cuda_graph_bs",
        "disable_radix_cache", "skip_server_warmup", "disable_shared_experts_fusion",
        "kt_gpu_prefill_token_threshold", "kt_enable_dynamic_expert_update", "mtp",
        "numa_policy", "host", "port",
    )  # fmt: skip
    items = []
    for dest in shown:
        value = settings.get(dest)
        if isinstance(value, list):
            text = " ".join(map(str, value))
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = str(value)
        overridden = settings.overridden(dest)
        items.append(
            PlanItem(
                "--" + dest.replace("_", "-"),
                text,
                "override" if overridden else "tutorial's tested value",
                settings.source(dest) if overridden else "default",
            )
        )
    return items


def make_plan(
    host: HostFacts,
    model: ModelFacts,
    weights: CpuWeights,
    settings: Settings,
    targets: tuple[Target, ...],
    environ: Mapping[str, str],
) -> Plan:
    """The whole plan; raises a LauncherError subclass when no plan can work."""
    if not host.gpus:
        why = "; ".join(n for n in host.notes if "NVML" in n or "nvidia-ml-py" in n)
        raise NoGpuError(
            "no NVIDIA GPU found"
            + (f" ({why})" if why else "")
            + "; start the container with GPUs (--gpus all / the NVIDIA runtime) "
            "or plan for another machine with --gpu 'NAME,MEMORY,CC'"
        )
    nnodes = int(settings.get("nnodes"))
    tp = settings.get("tp_size") or len(host.gpus) * nnodes
    if tp % nnodes:
        raise GpuCountError(f"tp-size {tp} is not divisible by nnodes {nnodes}")
    gpus_local = tp // nnodes
    if gpus_local > len(host.gpus):
        raise GpuCountError(
            f"tp-size {tp} over {nnodes} node(s) needs {gpus_local} GPUs here but "
            f"{len(host.gpus)} were found; lower KTHYBRID_TP_SIZE or expose more GPUs"
        )
    notes = list(host.notes)
    method_item = choose_method(host, weights, settings)
    method = method_item.value
    variant = settings.get("kt_cpu_variant")
    if variant is not None and not has_flags(host, VARIANT_FLAGS[variant]):
        missing = [f for f in VARIANT_FLAGS[variant] if f not in host.isa_flags]
        raise CpuIsaError(
            f"--kt-cpu-variant {variant} needs {', '.join(missing)}, which this CPU lacks; "
            "leave KTHYBRID_KT_CPU_VARIANT unset so kt-kernel picks what the CPU has"
        )
    threads = plan_threads(host, settings, gpus_local, weights.numa_count)
    if weights.numa_count is not None and weights.numa_count != len(threads.nodes):
        raise WeightFormatError(
            f"{weights.path} was converted for {weights.numa_count} NUMA node(s) but the plan "
            f"uses {len(threads.nodes)} pool(s); set KTHYBRID_KT_THREADPOOL_COUNT="
            f"{weights.numa_count} or convert again with `kthybrid-serve convert`"
        )
    experts = plan_gpu_experts(host, model, settings, tp, gpus_local)
    gpu_cc = host.gpus[0].cc_text
    target = target_for_cc(gpu_cc, targets)
    env, unset, env_items = plan_env(model, method, target, settings, environ)
    prefix = numa_prefix(str(settings.get("numa_policy")), threads.nodes)
    weight_path = weights.path
    argv = prefix + sglang_argv(model, settings, threads, experts.count, method, weight_path, tp)
    expert_bytes = cpu_expert_bytes(model, weights, bool(settings.get("mtp")))
    numa_item = PlanItem(
        "numactl",
        " ".join(prefix) or "(none)",
        {
            "interleave": "spread pages over all nodes, as the tutorial does",
            "local": "bind to the nodes used and allocate locally",
            "none": "no wrapper",
        }[str(settings.get("numa_policy"))],
        _source(settings, "numa_policy") if settings.overridden("numa_policy") else "planned",
    )
    tp_item = PlanItem(
        "--tensor-parallel-size",
        str(tp),
        f"{len(host.gpus)} GPU(s) x {nnodes} node(s)",
        settings.source("tp_size") if settings.overridden("tp_size") else "planned",
    )
    weight_item = PlanItem(
        "--kt-weight-path",
        weight_path,
        f"{weights.format}, {gib(weights.routed_bytes)} of routed experts",
        settings.source("kt_weight_path") if settings.overridden("kt_weight_path") else "planned",
    )
    items = [
        *threads.items,
        experts.item,
        method_item,
        weight_item,
        tp_item,
        numa_item,
        *env_items,
        *_default_items(settings),
    ]
    return Plan(
        kt_cpuinfer=threads.cpuinfer,
        kt_threadpool_count=len(threads.nodes),
        kt_numa_nodes=threads.nodes,
        threads_per_pool=threads.per_pool,
        kt_num_gpu_experts=experts.count,
        max_gpu_experts=experts.max_fit,
        kt_method=method,
        kt_weight_path=weight_path,
        tp_size=tp,
        gpus_used=gpus_local,
        cpu_expert_bytes=expert_bytes,
        host_memory_needed=host_memory_needed(expert_bytes),
        target=target.name if target else None,
        items=tuple(items),
        gpu_budget=experts.budget,
        env=env,
        env_unset=unset,
        argv=tuple(argv),
        notes=tuple(notes),
    )
