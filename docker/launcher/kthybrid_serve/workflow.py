"""Tie host, model, plan and checks together for each command, in the order that fails fastest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from kthybrid_serve.apikey import read_api_key
from kthybrid_serve.errors import CpuIsaError, LauncherError
from kthybrid_serve.host import HostFacts, read_host
from kthybrid_serve.method import AMX_FLAGS, has_flags
from kthybrid_serve.model import CpuWeights, ModelFacts, read_cpu_weights, read_model
from kthybrid_serve.plan import Plan, make_plan
from kthybrid_serve.runtime_needs import ImageFacts, read_image
from kthybrid_serve.settings import Settings
from kthybrid_serve.targets import TargetData, load_target_data
from kthybrid_serve.threads import ThreadRequest, plan_threads
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


def conversion_threads(host: HostFacts) -> tuple[int, int]:
    """Threads and pools for the converter: every allowed physical core, one pool per node."""
    if not has_flags(host, AMX_FLAGS):
        raise CpuIsaError(
            f"AMXINT4 weights can only be served on a CPU with AMX and this one ({host.cpu_model}) "
            "has none; serve the MXFP4 checkpoint directly (--kt-method MXFP4), no conversion"
        )
    threads = plan_threads(host, ThreadRequest(reserved_cores=0), gpus_local=0)
    return threads.cpuinfer, len(threads.nodes)


def prepare_conversion(
    settings: Settings, environ: Mapping[str, str]
) -> tuple[ModelFacts, int, int]:
    data = load_target_data()
    host = _host(settings)
    error = first_failure(preflight_checks(host, data, environ)[:1])
    if error is not None:
        raise error  # the converter dequantizes on the GPU
    model = read_model(settings.model)
    threads, pools = conversion_threads(host)
    return model, threads, pools
