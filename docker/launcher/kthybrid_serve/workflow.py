"""Tie host, model, plan and checks together for each command, in the order that fails fastest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kthybrid_serve.apikey import read_api_key
from kthybrid_serve.convert.run import ConvertRequest
from kthybrid_serve.errors import CpuIsaError, LauncherError, UsageError
from kthybrid_serve.host.host import HostFacts, read_host
from kthybrid_serve.model.model import ModelFacts, read_model
from kthybrid_serve.model.weights import CpuWeights, read_cpu_weights
from kthybrid_serve.plan.method import AMX_FLAGS, VARIANT_FLAGS, has_flags
from kthybrid_serve.plan.plan import Plan, make_plan
from kthybrid_serve.plan.replicas import ReplicaPlan, ReplicaSet, check_request, plan_replicas
from kthybrid_serve.plan.runtime_needs import ImageFacts, read_image
from kthybrid_serve.plan.targets import TargetData, load_target_data
from kthybrid_serve.plan.threads import ThreadRequest, cpu_budget, plan_threads
from kthybrid_serve.replica_checks import all_replicas_checks, own_checks, replica_prefix
from kthybrid_serve.settings import Settings
from kthybrid_serve.validate import (
    Check,
    check_cache,
    check_memlock,
    first_failure,
    plan_checks,
    preflight_checks,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Planned:
    host: HostFacts
    model: ModelFacts
    weights: CpuWeights
    plan: Plan
    checks: tuple[Check, ...]


def _host(settings: Settings) -> HostFacts:
    return read_host(settings.host_root, settings.gpu)


def _model(settings: Settings) -> tuple[ModelFacts, CpuWeights]:
    model = read_model(settings.model)
    weights = read_cpu_weights(settings.kt_weight_path or model.path, model)
    return model, weights


def _image(environ: Mapping[str, str], data: TargetData) -> ImageFacts:
    return read_image(environ, data)


def plan_and_validate(settings: Settings, environ: Mapping[str, str]) -> Planned:
    """Everything `plan` and `serve` need; raises the first refusal."""
    data = load_target_data()
    host = _host(settings)
    pre = preflight_checks(host, data, environ)
    error = first_failure(pre)
    if error is not None:
        raise error
    if settings.api_key_file is not None:
        read_api_key(settings.api_key_file)  # refuse a bad key file now, not after loading
    model, weights = _model(settings)
    plan = make_plan(host, model, weights, settings, data, environ, _image(environ, data))
    post = plan_checks(host, plan, settings)
    error = first_failure(post)
    if error is not None:
        raise error
    return Planned(host, model, weights, plan, tuple(pre + post))


def replica_mode(settings: Settings) -> bool:
    """Whether the command plans replicas: --replicas or --replica-index given."""
    return settings.overridden("replicas") or settings.replica_index is not None


@dataclass(frozen=True)
class PlannedReplicas:
    host: HostFacts
    model: ModelFacts
    weights: CpuWeights
    replicas: ReplicaSet

    def chosen(self, index: int) -> Planned:
        """One replica as `serve` runs it: its plan on its part of the host."""
        picked: ReplicaPlan = self.replicas.plans[index]
        return Planned(picked.host, self.model, self.weights, picked.plan, ())


def _raise_first(checks: list[Check]) -> None:
    error = first_failure(checks)
    if error is not None:
        raise error


def plan_replicas_and_validate(settings: Settings, environ: Mapping[str, str]) -> PlannedReplicas:
    """`plan --replicas N`: split, plan each replica, check the host holds them all.

    Without --replica-index the host's RAM must hold every replica's experts and runtime;
    with it (a server starting while the others run) the replica's own nodes must hold its.
    """
    check_request(settings)
    data = load_target_data()
    host = _host(settings)
    _raise_first(preflight_checks(host, data, environ))
    if settings.api_key_file is not None:
        read_api_key(settings.api_key_file)
    model, weights = _model(settings)
    replicas = plan_replicas(host, model, weights, settings, data, environ, _image(environ, data))
    index = settings.replica_index
    if index is None:
        _raise_first(all_replicas_checks(host, replicas, settings))
    for rp in replicas.plans:
        if index is None or rp.replica.index == index:
            _raise_first(own_checks(rp, settings))
    return PlannedReplicas(host, model, weights, replicas)


def serve_replica_index(settings: Settings) -> int:
    """The replica `serve` runs: --replica-index, or 0 of 1; several need the index."""
    if settings.replica_index is not None:
        return settings.replica_index
    if settings.replicas == 1:
        return 0
    raise UsageError(
        f"serve --replicas {settings.replicas} needs --replica-index (KTHYBRID_REPLICA_INDEX): "
        "which replica this server is; `kthybrid-serve plan --replicas "
        f"{settings.replicas}` shows them all"
    )


def replica_checks(
    host: HostFacts,
    model: ModelFacts,
    weights: CpuWeights,
    settings: Settings,
    data: TargetData,
    environ: Mapping[str, str],
) -> list[Check]:
    """`doctor --replicas N`: the split, each replica's part and memory checks, and (without
    --replica-index) the host holding every replica, as `plan --replicas N` refuses them."""
    checks: list[Check] = []

    def split() -> ReplicaSet:
        check_request(settings)
        return plan_replicas(host, model, weights, settings, data, environ, _image(environ, data))

    replicas = _step("replicas", split, checks)
    if replicas is None:
        return checks
    index = settings.replica_index
    known = replicas.split.affinity_known
    affinity = "known" if known else "UNKNOWN, GPUs in index order"
    summary = f"{settings.replicas} replica(s); GPU NUMA affinity {affinity}"
    checks.append(Check("replicas", "ok" if known else "warn", summary))
    checks += [Check("replicas-note", "warn", note) for note in replicas.split.notes]
    if index is None:
        checks += all_replicas_checks(host, replicas, settings)
    for rp in replicas.plans:
        r = rp.replica
        if index is not None and r.index != index:
            continue
        plan = rp.plan
        experts = (
            "all experts on GPU"
            if plan.gpu_only
            else (
                f"--kt-cpuinfer {plan.kt_cpuinfer} --kt-num-gpu-experts {plan.kt_num_gpu_experts}"
            )
        )
        checks.append(Check(f"replica-{r.index}", "ok", f"{replica_prefix(r)}CPUs {r.cpuset}, "
                            f"GPU(s) {r.device_ids}, port {r.port}; {experts}"))  # fmt: skip
        checks += own_checks(rp, settings)
    return checks


def _step(name: str, action: Callable[[], T], checks: list[Check]) -> T | None:
    try:
        return action()
    except LauncherError as error:
        checks.append(Check(name, "fail", error.message, error))
        return None


def _cpu_check(host: HostFacts) -> Check:
    cores = host.physical_cores_by_node()
    quota = host.cgroup.cpu_quota
    limit = f"; CPU quota {quota.cpus:g} CPUs" if quota else ""
    return Check(
        "cpu",
        "ok",
        f"{host.cpu_model}: {sum(cores.values())} allowed physical cores on {len(cores)} NUMA "
        f"node(s){limit}; ISA {' '.join(sorted(host.isa_flags)) or 'none'}",
    )


def doctor(settings: Settings, environ: Mapping[str, str]) -> list[Check]:
    """Every check, each reported on its own, continuing past failures where possible."""
    checks: list[Check] = []
    data = _step("targets", load_target_data, checks)
    host = _step("host", lambda: _host(settings), checks)
    if data is None or host is None:
        return checks
    checks.append(Check("targets", "ok", f"{len(data.targets)} GPU targets, CUDA {data.cuda}"))
    checks.append(_cpu_check(host))
    for note in host.notes:
        checks.append(Check("host-note", "warn" if "unavailable" not in note else "ok", note))
    checks += preflight_checks(host, data, environ)
    checks += [check_memlock(host), check_cache(environ)]
    if settings.api_key_file is not None:
        key_file = settings.api_key_file
        if _step("api-key", lambda: read_api_key(key_file), checks) is not None:
            checks.append(Check("api-key", "ok", f"API key read from {key_file}"))
    loaded = _step("model", lambda: _model(settings), checks)
    if loaded is None:
        return checks
    model, weights = loaded
    revision = f"; revision {model.revision}" if model.revision else ""
    checks.append(Check("model", "ok",
                        f"{model.path}: {model.shard_count} shards complete, {model.moe_layers} "
                        f"MoE layers x {model.routed_experts} experts; CPU weights "
                        f"{weights.format} at {weights.path}{revision}"))  # fmt: skip
    if not host.gpus:
        return checks
    if replica_mode(settings):
        return checks + replica_checks(host, model, weights, settings, data, environ)
    image = _image(environ, data)
    plan = _step(
        "plan", lambda: make_plan(host, model, weights, settings, data, environ, image), checks
    )
    if plan is None:
        return checks
    summary = (
        "GPU-only (every routed expert fits on the GPUs)"
        if plan.gpu_only
        else f"--kt-cpuinfer {plan.kt_cpuinfer} --kt-threadpool-count {plan.kt_threadpool_count} "
        f"--kt-num-gpu-experts {plan.kt_num_gpu_experts} --kt-method {plan.kt_method}"
    )
    checks.append(Check("plan", "ok", summary))
    checks += plan_checks(host, plan, settings)
    return checks


# kt-kernel's AMX-INT4 quantizer (BufferBInt4Impl::from_mat) is AVX-512 code: its AVX-512
# builds write the same files as its AMX build (checked on an AMX host, evidence/h200).
QUANTIZER_FLAGS = VARIANT_FLAGS["avx512_base"]


def conversion_threads(settings: Settings, host: HostFacts) -> tuple[int, tuple[int, ...]]:
    """Threads and NUMA node per pool for the converter: every allowed physical core (nothing
    is reserved: no server runs beside it), one pool per node unless the pool count is given.
    A given pool count above this host's nodes converts for another host: the pools then share
    this host's nodes (the files depend on the pool count only)."""
    cores = host.physical_cores_by_node()
    pools = settings.kt_threadpool_count
    if pools is not None and pools > len(cores) and settings.kt_numa_nodes is None:
        here = sorted(cores)
        nodes = tuple(here[i % len(here)] for i in range(pools))
        budget = cpu_budget(host, ThreadRequest(reserved_cores=0), gpus_local=0)
        return max(pools, settings.kt_cpuinfer or budget.threads), nodes
    request = ThreadRequest(
        reserved_cores=0,
        cpuinfer=settings.kt_cpuinfer,
        pools=pools,
        nodes=settings.kt_numa_nodes,
    )
    planned = plan_threads(host, request, gpus_local=0)
    return planned.cpuinfer, planned.nodes


def prepare_conversion(settings: Settings) -> tuple[ConvertRequest, list[str]]:
    """What `convert` converts, where, with which threads and pools; notes to print first.

    The GPU is optional (the experts are dequantized on the CPU without one); the CPU needs
    AVX-512 for kt-kernel's quantizer, and AMX only where the result is served.
    """
    host = _host(settings)
    if not has_flags(host, QUANTIZER_FLAGS):
        raise CpuIsaError(
            f"this CPU ({host.cpu_model}) has neither AMX, which serving AMXINT4 weights needs, "
            "nor AVX512F+AVX512BW, which kt-kernel's AMX-INT4 quantizer needs; serve the MXFP4 "
            "checkpoint directly (--kt-method MXFP4), no conversion"
        )
    notes = []
    if not has_flags(host, AMX_FLAGS):
        notes.append(
            f"note: this CPU ({host.cpu_model}) has no AMX: it writes the same AMX-INT4 files "
            "as an AMX CPU, but only a CPU with AMX can serve them"
        )
    threads, nodes = conversion_threads(settings, host)
    model = Path(settings.model)
    output = Path(settings.output) if settings.output else Path(f"{model.absolute()}-AMXINT4")
    available = host.memory_available_bytes()
    if host.cgroup.memory_limit is not None:
        available = min(available, host.cgroup.memory_limit)
    request = ConvertRequest(
        model=model,
        output=output,
        threads=threads,
        numa_nodes=nodes,
        memory_available=available,
    )
    return request, notes


CEILING_ITEM = "CPU decode ceiling"


def serving_ceiling(settings: Settings, environ: Mapping[str, str]) -> tuple[float | None, str]:
    """The plan's CPU decode ceiling in tokens/s per sequence for bench-serve, or why none.

    It needs what `plan` needs (the model directory, GPUs or --gpu) and a tune record; a
    client away from the server has none of these, so every refusal is a note, not an error.
    """
    try:
        data = load_target_data()
        host = _host(settings)
        model, weights = _model(settings)
        plan = make_plan(host, model, weights, settings, data, environ, _image(environ, data))
    except LauncherError as error:
        return None, f"no plan here ({error.message})"
    except OSError as error:
        return None, f"no plan here ({error})"
    item = next((i for i in plan.items if i.name == CEILING_ITEM), None)
    if item is None:
        return None, "the plan keeps every expert on the GPU; the CPU sets no ceiling"
    number = item.value.removesuffix(" tokens/s")
    if number == item.value:
        return None, f"{item.value}: {item.reason}"
    return float(number), item.reason
