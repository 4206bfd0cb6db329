"""Properties of the planner over generated hosts (hypothesis), without touching files."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from kthybrid_serve.host.cgroup import CgroupLimits
from kthybrid_serve.host.host import Cpu, Gpu, HostFacts, NumaNode
from kthybrid_serve.model.model import ModelFacts
from kthybrid_serve.model.weights import CpuWeights
from kthybrid_serve.plan.plan import make_plan
from kthybrid_serve.plan.targets import load_target_data
from kthybrid_serve.settings import default_settings

GIB = 1024**3
MODEL = ModelFacts(
    path="/models/m", served_name="m", architecture="DeepseekV4ForCausalLM",
    model_type="deepseek_v4", num_layers=43, moe_layers=43, routed_experts=256,
    experts_per_token=6, hidden_size=4096, moe_intermediate_size=2048, quantization="fp8",
    expert_dtype="fp4", nextn_layers=1, head_dim=512, kv_heads=1, kv_lora_rank=0,
    qk_rope_head_dim=64, shard_count=46, routed_bytes=43 * 256 * 13_369_344,
    mtp_routed_bytes=256 * 13_369_344, mtp_other_bytes=400_000_000,
    other_bytes=9 * GIB, routed_format="MXFP4",
)  # fmt: skip
WEIGHTS = CpuWeights("/models/m", "MXFP4", MODEL.routed_bytes, None, True)


@st.composite
def hosts(draw: st.DrawFn) -> HostFacts:
    sockets = draw(st.integers(1, 2))
    per_socket = draw(st.integers(1, 4))
    cores_per_node = draw(st.integers(1, 64))
    smt = draw(st.booleans())
    nodes = sockets * per_socket
    cores = nodes * cores_per_node
    cpus = []
    for cpu in range(cores * (2 if smt else 1)):
        core = cpu % cores
        cpus.append(
            Cpu(
                cpu,
                core % (cores_per_node * per_socket),
                core // cores_per_node // per_socket,
                core // cores_per_node,
            )
        )
    allowed = draw(st.sets(st.sampled_from([c.cpu for c in cpus]), min_size=1, max_size=len(cpus)))
    numa = tuple(
        NumaNode(n, tuple(c.cpu for c in cpus if c.node == n), 256 * GIB) for n in range(nodes)
    )
    gpu_count = draw(st.integers(1, 8))
    gpu_mem = draw(st.sampled_from([24, 32, 48, 80, 141])) * GIB
    gpus = tuple(Gpu(i, "GPU", gpu_mem, (9, 0), source="flag") for i in range(gpu_count))
    return HostFacts(
        root="/", cpus=tuple(cpus), nodes=numa, allowed_cpus=frozenset(allowed),
        mem_total_bytes=1024 * GIB, mem_available_bytes=1000 * GIB, cgroup=CgroupLimits(2),
        shm_bytes=16 * GIB, memlock_bytes=None,
        isa_flags=frozenset({"avx2", "avx512f", "avx512bw", "avx512_bf16"}), cpu_model="x",
        gpus=gpus, gpu_source="flag",
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(host=hosts(), mtp=st.booleans(), context=st.sampled_from([4096, 16384, 65536]))
def test_plans_respect_cores_pools_and_gpu_budget(host: HostFacts, mtp: bool, context: int) -> None:
    config = default_settings(mtp=mtp, context_length=context)
    try:
        plan = make_plan(host, MODEL, WEIGHTS, config, load_target_data(), {})
    except Exception as error:  # only a GPU too small for weights + KV may refuse
        assert type(error).__name__ == "GpuMemoryError", error
        return
    cores = host.physical_cores_by_node()
    if plan.gpu_only:  # every expert fits: no CPU side at all
        assert plan.kt_cpuinfer is None and "--kt-cpuinfer" not in plan.argv
        assert plan.kt_num_gpu_experts == MODEL.routed_experts
        return
    # Threads never exceed allowed physical cores, per pool and in total.
    assert plan.kt_cpuinfer is not None
    assert sum(plan.threads_per_pool) == plan.kt_cpuinfer
    assert plan.kt_cpuinfer <= host.allowed_physical_cores
    for node, threads in zip(plan.kt_numa_nodes, plan.threads_per_pool, strict=True):
        assert 1 <= threads <= cores[node]
    # Pools equal NUMA nodes used, each used once, each with allowed cores.
    assert plan.kt_threadpool_count == len(plan.kt_numa_nodes) == len(set(plan.kt_numa_nodes))
    assert set(plan.kt_numa_nodes) <= set(cores)
    # GPU experts fit what the budget leaves.
    left = plan.gpu_budget[-1].amount
    per_gpu = MODEL.bytes_per_expert * MODEL.moe_layers // plan.tp_size
    assert 0 <= plan.kt_num_gpu_experts <= MODEL.routed_experts
    assert plan.kt_num_gpu_experts * per_gpu <= left
    # Deterministic: the same facts give the same plan.
    assert make_plan(host, MODEL, WEIGHTS, config, load_target_data(), {}) == plan


@settings(max_examples=100, deadline=None)
@given(host=hosts())
def test_argv_carries_the_planned_kt_flags(host: HostFacts) -> None:
    try:
        plan = make_plan(host, MODEL, WEIGHTS, default_settings(), load_target_data(), {})
    except Exception:
        return
    argv = list(plan.argv)
    if plan.gpu_only:
        assert not any(a.startswith("--kt-") for a in argv)
        return
    assert argv[argv.index("--kt-cpuinfer") + 1] == str(plan.kt_cpuinfer)
    assert argv[argv.index("--kt-threadpool-count") + 1] == str(plan.kt_threadpool_count)
    assert argv[argv.index("--kt-num-gpu-experts") + 1] == str(plan.kt_num_gpu_experts)
