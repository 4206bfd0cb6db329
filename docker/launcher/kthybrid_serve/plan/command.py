"""The server's environment and command line: numactl, sglang's flags, the KT flags."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass

from kthybrid_serve.errors import CpuTopologyError
from kthybrid_serve.host.host import HostFacts
from kthybrid_serve.model.model import ModelFacts
from kthybrid_serve.plan.hugepages import (
    HUGETLB_POOL_FACTOR,
    glibc_tunables,
)
from kthybrid_serve.plan.items import PlanItem
from kthybrid_serve.plan.memory import DEFAULT_KERNEL_MEMORY, KernelMemory
from kthybrid_serve.plan.threads import ThreadPlan
from kthybrid_serve.settings import Settings, format_value

# Started instead of sglang.launch_server when an API key is set: it reads the key
# from its file, so the key is in no command line (/proc/<pid>/cmdline) and no log.
KEYED_ENTRY = "kthybrid_serve.sglang_entry"
PLAIN_ENTRY = "sglang.launch_server"
DSV4_MODE = "2604"
DSV4_SUBMODE_MXFP4 = "2604B"


@dataclass(frozen=True)
class KtFlags:
    """The CPU side of the plan; None for a GPU-only plan."""

    threads: ThreadPlan
    experts: int
    method: str
    weight_path: str


def plan_env(
    model: ModelFacts,
    method: str | None,
    settings: Settings,
    environ: Mapping[str, str],
    kernel: KernelMemory = DEFAULT_KERNEL_MEMORY,
) -> tuple[dict[str, str], tuple[str, ...], list[PlanItem]]:
    """(set, unset, items): the launcher owns SGLANG_DSV4_* and KT_KERNEL_CPU_VARIANT."""
    env: dict[str, str] = {}
    unset: list[str] = []
    items: list[PlanItem] = []
    if model.model_type == "deepseek_v4":
        mode = environ.get("SGLANG_DSV4_MODE") or DSV4_MODE
        env["SGLANG_DSV4_MODE"] = mode
        source = "env" if environ.get("SGLANG_DSV4_MODE") else "planned"
        items.append(PlanItem("SGLANG_DSV4_MODE", mode, "DeepSeek-V4 checkpoint layout", source))
        if model.routed_format == "MXFP4" and method in {None, "MXFP4"}:
            env["SGLANG_DSV4_2604_SUBMODE"] = DSV4_SUBMODE_MXFP4
            items.append(PlanItem("SGLANG_DSV4_2604_SUBMODE", DSV4_SUBMODE_MXFP4,
                                  "MXFP4 experts (SwiGLU clamp 10)"))  # fmt: skip
        elif "SGLANG_DSV4_2604_SUBMODE" in environ:
            unset.append("SGLANG_DSV4_2604_SUBMODE")
            items.append(PlanItem("SGLANG_DSV4_2604_SUBMODE", "(unset)",
                                  f"2604B is only valid with MXFP4; kt-kernel refuses it with "
                                  f"{method}"))  # fmt: skip
    if settings.kt_cpu_variant is not None and method is not None:
        env["KT_KERNEL_CPU_VARIANT"] = settings.kt_cpu_variant
        items.append(PlanItem("KT_KERNEL_CPU_VARIANT", settings.kt_cpu_variant, "forced",
                              settings.source("kt_cpu_variant")))  # fmt: skip
    tunables = glibc_tunables(settings.hugepages, environ) if method is not None else None
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
        what = (
            "malloc madvises its mapped chunks: THP backs kt-kernel's expert buffers (measured: "
            f"{kernel.thp_share:.0%} of the expert bytes)"
            if settings.hugepages == "thp"
            else "malloc maps its chunks from the reserved 2 MiB pool (measured: the pool holds "
            f"{HUGETLB_POOL_FACTOR}x the expert bytes, {kernel.hugetlb_small_share:.0%} stay on "
            "4 KiB pages)"
        )
        why = f"KTHYBRID_HUGEPAGES={settings.hugepages}: {what}"
        items.append(PlanItem("GLIBC_TUNABLES", tunables, why, settings.source("hugepages")))
    if settings.api_key_file is not None:
        env["KTHYBRID_API_KEY_FILE"] = settings.api_key_file
    return env, tuple(unset), items


def numa_prefix(policy: str, host: HostFacts, nodes: tuple[int, ...]) -> tuple[list[str], str]:
    """(numactl words, why); interleave covers the nodes in use that memory may come from."""
    if policy == "none":
        return [], "no wrapper"
    if policy == "interleave-all":
        return ["numactl", "--interleave=all"], "spread pages over every node, as asked"
    allowed = set(host.memory_nodes())
    usable = [n for n in nodes if n in allowed]
    if not usable:
        raise CpuTopologyError(
            f"the expert threads run on NUMA node(s) {','.join(map(str, nodes))} but memory "
            f"may only come from node(s) {','.join(map(str, sorted(allowed)))} (cgroup "
            "cpuset.mems); give the pod memory on those nodes or set KTHYBRID_NUMA_POLICY=none"
        )
    joined = ",".join(map(str, usable))
    if policy == "local":
        return ["numactl", f"--cpunodebind={joined}", "--localalloc"], (
            "bind to the nodes used and allocate locally"
        )
    skipped = sorted(allowed - set(usable))
    why = f"spread expert pages over node(s) {joined}, where the expert threads run"
    if skipped:
        why += (
            f"; node(s) {','.join(map(str, skipped))} hold no expert threads (CPU-less "
            "memory such as CXL is never used unless KTHYBRID_NUMA_POLICY=interleave-all)"
        )
    return ["numactl", f"--interleave={joined}"], why


def kt_argv(kt: KtFlags, settings: Settings) -> list[str]:
    argv = [
        "--kt-weight-path", kt.weight_path,
        "--kt-method", kt.method,
        "--kt-num-gpu-experts", str(kt.experts),
        "--kt-cpuinfer", str(kt.threads.cpuinfer),
        "--kt-threadpool-count", str(len(kt.threads.nodes)),
        "--kt-numa-nodes", *map(str, kt.threads.nodes),
        "--kt-gpu-prefill-token-threshold", str(settings.kt_gpu_prefill_token_threshold),
    ]  # fmt: skip
    if settings.kt_enable_dynamic_expert_update:
        argv.append("--kt-enable-dynamic-expert-update")
    return argv


def sglang_argv(model: ModelFacts, settings: Settings, kt: KtFlags | None, tp: int) -> list[str]:
    s = settings
    entry = KEYED_ENTRY if s.api_key_file is not None else PLAIN_ENTRY
    argv = [
        sys.executable, "-m", entry,
        "--host", s.host,
        "--port", str(s.port),
        "--model-path", model.path,
        "--served-model-name", s.served_model_name or model.served_name,
    ]  # fmt: skip
    if s.trust_remote_code:
        argv.append("--trust-remote-code")
    if kt is not None:
        argv += kt_argv(kt, s)
    argv += [
        "--tensor-parallel-size", str(tp),
        "--context-length", str(s.context_length),
        "--attention-backend", s.attention_backend,
        "--mem-fraction-static", str(s.mem_fraction_static),
        "--chunked-prefill-size", str(s.chunked_prefill_size),
        "--max-prefill-tokens", str(s.max_prefill_tokens),
        "--max-running-requests", str(s.max_running_requests),
        "--watchdog-timeout", str(s.watchdog_timeout),
        "--cuda-graph-bs", *map(str, s.cuda_graph_bs),
        "--cuda-graph-max-bs", str(max(s.cuda_graph_bs)),
    ]  # fmt: skip
    for enabled, flag in (
        (s.disable_shared_experts_fusion, "--disable-shared-experts-fusion"),
        (s.disable_radix_cache, "--disable-radix-cache"),
        (s.skip_server_warmup, "--skip-server-warmup"),
    ):
        if enabled:
            argv.append(flag)
    argv += observability_argv(s, tp)
    if s.mtp:
        argv += [
            "--speculative-algorithm", "EAGLE",
            "--speculative-num-steps", "3",
            "--speculative-eagle-topk", "1",
            "--speculative-num-draft-tokens", "4",
            "--speculative-moe-runner-backend", "auto",
        ]  # fmt: skip
    if s.nnodes > 1:
        argv += ["--nnodes", str(s.nnodes), "--node-rank", str(s.node_rank)]
        if s.dist_init_addr:
            argv += ["--dist-init-addr", s.dist_init_addr]
    return argv + list(s.extra_args)


def observability_argv(s: Settings, tp: int) -> list[str]:
    """sglang's metrics, request-log and tracing flags (checked against sglang-kt 0.7.2's
    parser in tests/observability)."""
    argv: list[str] = []
    if s.enable_metrics:
        argv.append("--enable-metrics")
        every_rank = s.metrics_all_schedulers
        if every_rank if every_rank is not None else tp > 1:
            argv.append("--enable-metrics-for-all-schedulers")
    if s.log_requests != "off":
        argv += ["--log-requests", "--log-requests-format", s.log_requests]
    if s.otlp_traces_endpoint is not None:
        argv += ["--enable-trace", "--otlp-traces-endpoint", s.otlp_traces_endpoint]
    return argv


SHOWN_DEFAULTS = (
    "context_length", "chunked_prefill_size", "max_prefill_tokens", "max_running_requests",
    "watchdog_timeout", "attention_backend", "mem_fraction_static", "cuda_graph_bs",
    "disable_radix_cache", "skip_server_warmup", "disable_shared_experts_fusion",
    "kt_gpu_prefill_token_threshold", "kt_enable_dynamic_expert_update", "mtp",
    "trust_remote_code", "host", "port",
)  # fmt: skip


def default_items(settings: Settings) -> list[PlanItem]:
    """sglang flags that come from the tested tutorial command unless overridden."""
    items = []
    for dest in SHOWN_DEFAULTS:
        value = getattr(settings, dest)
        text = format_value(value).replace(",", " ") if isinstance(value, tuple) else None
        overridden = settings.overridden(dest)
        items.append(
            PlanItem(
                "--" + dest.replace("_", "-"),
                text if text is not None else format_value(value),
                "override" if overridden else "tutorial's tested value",
                settings.source(dest),
            )
        )
    return items
