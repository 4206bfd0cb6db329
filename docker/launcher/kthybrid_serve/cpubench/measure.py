"""`kthybrid-serve bench` and `tune`: what to measure, from the plan's own inputs, and where to.

Both read this machine (never a --host-root tree: a measurement is of the machine it runs
on), the model's expert shape and the method the plan picks, and the plan's pool layout:
the rule's, or a matching tune record's. `bench` measures and writes the JSON and the plot
under `$XDG_CACHE_HOME/bench/` (/cache/bench in the image); `tune` measures around the rule
and stores the best layout this host can run as a tune record for `plan` and `serve`.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kthybrid_serve.cpubench.bandwidth import host_cpus
from kthybrid_serve.cpubench.plot import render_png
from kthybrid_serve.cpubench.sweep import BenchOptions, PoolLayout, run_bench
from kthybrid_serve.cpubench.tuning import choose, store
from kthybrid_serve.drawing import PlotError
from kthybrid_serve.errors import UsageError
from kthybrid_serve.host.host import HostFacts, read_host
from kthybrid_serve.model.experts import ExpertShape, expert_shape
from kthybrid_serve.model.model import read_model
from kthybrid_serve.model.weights import read_cpu_weights
from kthybrid_serve.plan.method import choose_method
from kthybrid_serve.plan.plan import thread_request
from kthybrid_serve.plan.records import Tuned, tune_dir, tune_key, tuned_threads
from kthybrid_serve.plan.threads import ThreadPlan, plan_threads
from kthybrid_serve.settings import Settings


@dataclass(frozen=True)
class BenchInputs:
    host: HostFacts
    shape: ExpertShape
    method: str
    rule: ThreadPlan
    planned: ThreadPlan  # what `plan` would use now: the rule's, or a tune record's
    tuned: Tuned | None


def cache_root(environ: Mapping[str, str]) -> Path:
    """$XDG_CACHE_HOME (the image sets /cache, the cache volume), else ~/.cache."""
    root = environ.get("XDG_CACHE_HOME")
    return Path(root) if root else Path(environ.get("HOME", "~")).expanduser() / ".cache"


def bench_dir(environ: Mapping[str, str]) -> Path:
    return cache_root(environ) / "bench"


def _gpus_local(host: HostFacts, settings: Settings) -> int:
    """GPUs on this node the plan feeds (each gets a scheduler process and a reserved core)."""
    if not host.gpus:
        return 0
    tp = settings.tp_size or len(host.gpus) * settings.nnodes
    return min(len(host.gpus), max(1, tp // settings.nnodes))


def bench_inputs(settings: Settings, environ: Mapping[str, str]) -> BenchInputs:
    if settings.host_root != "/":
        raise UsageError(
            f"--host-root {settings.host_root}: bench and tune measure the machine they run on; "
            "a host tree is only for planning another machine"
        )
    host = read_host("/", settings.gpu)
    model = read_model(settings.model)
    weights = read_cpu_weights(settings.kt_weight_path or model.path, model)
    method = choose_method(host, weights, settings).value
    request = thread_request(settings, weights)
    rule = plan_threads(host, request, _gpus_local(host, settings))
    shape = expert_shape(model)
    planned, tuned = tuned_threads(host, shape, method, request, rule, environ)
    return BenchInputs(host, shape, method, rule, planned, tuned)


def _layout(threads: ThreadPlan) -> PoolLayout:
    return PoolLayout(threads.nodes, threads.per_pool)


def measure(inputs: BenchInputs, plan: ThreadPlan, say: Callable[[str], None]) -> dict[str, Any]:
    say(
        f"{inputs.method} experts of {inputs.shape.model} ({inputs.shape.hidden}x"
        f"{inputs.shape.intermediate}, top-{inputs.shape.top_k}); plan: {plan.cpuinfer} threads "
        f"in {len(plan.nodes)} pool(s)"
    )
    options = BenchOptions(environ=dict(os.environ), progress=say)
    result = run_bench(inputs.shape, inputs.method, _layout(plan), host_cpus(inputs.host), options)
    result["host_name"] = platform.node()
    result["gpus"] = [gpu.name for gpu in inputs.host.gpus]
    result["rule_threads"] = inputs.rule.cpuinfer
    return result


def run_bench_command(
    settings: Settings, environ: Mapping[str, str], say: Callable[[str], None]
) -> dict[str, Any]:
    """Measure with the plan's current layout; write JSON and plot; return the JSON."""
    inputs = bench_inputs(settings, environ)
    result = measure(inputs, inputs.planned, say)
    result["plan_source"] = "measured" if inputs.tuned else "rule"
    directory = bench_dir(environ)
    stem = f"cpu-experts-{inputs.method}"
    json_path = directory / f"{stem}.json"
    result["json_path"] = str(json_path)
    try:
        result["png_path"] = str(render_png(result, directory / f"{stem}.png"))
        result["plot_error"] = None
    except PlotError as error:
        result["png_path"] = None
        result["plot_error"] = str(error)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_tune_command(
    settings: Settings, environ: Mapping[str, str], say: Callable[[str], None]
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Measure around the rule and store the best layout; (record, chosen run, bench JSON)."""
    inputs = bench_inputs(settings, environ)
    if settings.kt_cpuinfer is not None:
        raise UsageError(
            "--kt-cpuinfer is set: tune measures the thread counts itself; unset "
            "KTHYBRID_KT_CPUINFER (the plan uses the tuned count only when it is unset)"
        )
    result = measure(inputs, inputs.rule, say)
    result["plan_source"] = "rule"
    chosen = choose(result, inputs.host.physical_cores_by_node())
    key = tune_key(inputs.host, inputs.shape, inputs.method)
    return store(tune_dir(environ), key, result, chosen), chosen, result
