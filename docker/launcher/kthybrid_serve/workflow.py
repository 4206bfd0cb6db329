"""Tie host, model, plan and checks together for each command, in the order that fails fastest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from kthybrid_serve.errors import CpuIsaError, LauncherError
from kthybrid_serve.host import HostFacts, read_host
from kthybrid_serve.model import CpuWeights, ModelFacts, read_cpu_weights, read_model
from kthybrid_serve.plan import AMX_FLAGS, Plan, has_flags, make_plan, plan_threads
from kthybrid_serve.settings import Settings
from kthybrid_serve.targets import Target, load_targets
from kthybrid_serve.validate import (
    Check,
    check_cache,
    check_memlock,
    first_failure,
    plan_checks,
    preflight_checks,
)


@dataclass(frozen=True)
class Planned:
    host: HostFacts
    model: ModelFacts
    weights: CpuWeights
    plan: Plan
    checks: tuple[Check, ...]


def _host(settings: Settings) -> HostFacts:
    return read_host(str(settings.get("host_root")), settings.get("gpu") or ())


def _model(settings: Settings) -> tuple[ModelFacts, CpuWeights]:
    model = read_model(str(settings.get("model")))
    weights = read_cpu_weights(str(settings.get("kt_weight_path") or model.path), model)
    return model, weights


def plan_and_validate(settings: Settings, environ: Mapping[str, str]) -> Planned:
    """Everything `plan` and `serve` need; raises the first refusal."""
    targets, _ = load_targets(environ)
    host = _host(settings)
    pre = preflight_checks(host, targets, environ)
    error = first_failure(pre)
    if error is not None:
        raise error
    model, weights = _model(settings)
    plan = make_plan(host, model, weights, settings, targets, environ)
    post = plan_checks(host, plan, settings)
    error = first_failure(post)
    if error is not None:
        raise error
    return Planned(host, model, weights, plan, tuple(pre + post))


def _step(name: str, action: Callable[[], object], checks: list[Check]) -> object | None:
    try:
        return action()
    except LauncherError as error:
        checks.append(Check(name, "fail", error.message, error))
        return None


def doctor(settings: Settings, environ: Mapping[str, str]) -> list[Check]:
    """Every check, each reported on its own, continuing past failures where possible."""
    checks: list[Check] = []
    targets_loaded = load_targets(environ)
    targets: tuple[Target, ...] = targets_loaded[0]
    checks.append(Check("targets", "ok", f"GPU targets from {targets_loaded[1]}"))
    host = _step("host", lambda: _host(settings), checks)
    if not isinstance(host, HostFacts):
        return checks
    cores = host.physical_cores_by_node()
    checks.append(
        Check(
            "cpu",
            "ok",
            f"{host.cpu_model}: {sum(cores.values())} allowed physical cores on "
            f"{len(cores)} NUMA node(s); ISA {' '.join(sorted(host.isa_flags)) or 'none'}",
        )
    )
    for note in host.notes:
        checks.append(Check("host-note", "warn" if "unavailable" not in note else "ok", note))
    checks += preflight_checks(host, targets, environ)
    checks += [check_memlock(host), check_cache(environ)]
    loaded = _step("model", lambda: _model(settings), checks)
    if loaded is None:
        return checks
    assert isinstance(loaded, tuple)
    model, weights = loaded
    checks.append(
        Check(
            "model",
            "ok",
            f"{model.path}: {model.shard_count} shards complete, {model.moe_layers} MoE layers x "
            f"{model.routed_experts} experts; CPU weights {weights.format} at {weights.path}",
        )
    )
    if not host.gpus:
        return checks
    plan = _step(
        "plan", lambda: make_plan(host, model, weights, settings, targets, environ), checks
    )
    if not isinstance(plan, Plan):
        return checks
    checks.append(
        Check(
            "plan",
            "ok",
            f"--kt-cpuinfer {plan.kt_cpuinfer} --kt-threadpool-count {plan.kt_threadpool_count} "
            f"--kt-num-gpu-experts {plan.kt_num_gpu_experts} --kt-method {plan.kt_method}",
        )
    )
    checks += plan_checks(host, plan, settings)
    return checks


def conversion_threads(settings: Settings, host: HostFacts) -> tuple[int, int]:
    """Threads and pools for the converter: every allowed physical core, one pool per node."""
    if not has_flags(host, AMX_FLAGS):
        raise CpuIsaError(
            f"AMXINT4 weights can only be served on a CPU with AMX and this one ({host.cpu_model}) "
            "has none; serve the MXFP4 checkpoint directly (--kt-method MXFP4), no conversion"
        )
    values = dict(settings.values)
    values["reserved_cores"] = 0
    values["kt_cpuinfer"] = None
    threads = plan_threads(host, replace(settings, values=values), 0, None)
    return threads.cpuinfer, len(threads.nodes)


def prepare_conversion(
    settings: Settings, environ: Mapping[str, str]
) -> tuple[ModelFacts, int, int]:
    targets, _ = load_targets(environ)
    host = _host(settings)
    error = first_failure(preflight_checks(host, targets, environ)[:1])
    if error is not None:
        raise error  # the converter dequantizes on the GPU
    model = read_model(str(settings.get("model")))
    threads, pools = conversion_threads(settings, host)
    return model, threads, pools
