"""A stand-in for sglang-kt's server that serves the real /metrics, run inside the image.

No GPU here, so no model runs: this script drives sglang-kt 0.7.2's own metrics code
(SchedulerMetricsCollector, TokenizerMetricsCollector from sglang.srt.observability) with
simulated traffic and serves it the way sglang's HTTP server does (add_prometheus_middleware
over prometheus_client's multiprocess registry, behind sglang's API key middleware). Before
that it does what `kthybrid-serve serve` does before its exec: plan from KTHYBRID_* and
write the plan's metrics (kthybrid_serve.metrics.prepare_metrics) into the directory it hands
to the server as PROMETHEUS_MULTIPROC_DIR.

Two servers, each a forked child with its own directory and port:
  healthy    : requests run and decode; first tokens in under a second.
  overloaded : the queue grows by one request a tick, prefill runs (slow first tokens, 20-40 s)
               but decode makes no progress; it exits once after RESTART_AFTER seconds and is
               started again (a restart: a new start time, counters from zero).

Usage: python3 standin.py HEALTHY_PORT OVERLOADED_PORT (KTHYBRID_* as for `serve`;
KTHYBRID_API_KEY_FILE guards every route but /health* and /metrics, as in sglang).
"""

from __future__ import annotations

import enum
import os
import random
import sys
import tempfile
import threading
import time
import traceback
import types
from typing import Any

RESTART_AFTER = 8.0
TICK = 0.5


def _stub_forward_batch_info() -> None:
    """metrics_collector imports ForwardMode from forward_batch_info, which loads sgl_kernel's
    CUDA library (libcuda.so.1: absent without a GPU). The collectors use ForwardMode only for
    DP cooperation labels, which this stand-in never passes; give it the enum alone."""
    module = types.ModuleType("sglang.srt.model_executor.forward_batch_info")

    class ForwardMode(enum.IntEnum):
        EXTEND = 1
        DECODE = 2

        def is_extend(self) -> bool:
            return self is ForwardMode.EXTEND

    module.ForwardMode = ForwardMode  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module


def _plan_env() -> tuple[dict[str, str], str]:
    """What `serve` adds to the server's environment for metrics, and the served name."""
    from kthybrid_serve.metrics import prepare_metrics
    from kthybrid_serve.settings import resolve_settings
    from kthybrid_serve.workflow import plan_and_validate

    settings = resolve_settings({}, os.environ)
    planned = plan_and_validate(settings, os.environ)
    name = settings.served_model_name or planned.model.served_name
    return prepare_metrics(planned.plan, settings, name, os.environ, time.time()), name


def _app(api_key: str | None) -> Any:
    from fastapi import FastAPI, Response
    from sglang.srt.utils.auth import add_api_key_middleware
    from sglang.srt.utils.common import add_prometheus_middleware

    app = FastAPI()

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": []}

    add_api_key_middleware(app, api_key=api_key, admin_api_key=None)
    add_prometheus_middleware(app)
    return app


def _server_args(name: str) -> Any:
    """ServerArgs with its declared defaults (its __post_init__ probes the GPU: skipped)."""
    import dataclasses

    from sglang.srt.server_args import ServerArgs

    args = object.__new__(ServerArgs)
    for f in dataclasses.fields(ServerArgs):
        if f.default is not dataclasses.MISSING:
            setattr(args, f.name, f.default)
        elif f.default_factory is not dataclasses.MISSING:
            setattr(args, f.name, f.default_factory())
    args.served_model_name = name
    args.enable_metrics = True
    return args


def _traffic(scenario: str, name: str, stop: threading.Event) -> None:
    from sglang.srt.observability.metrics_collector import (
        SchedulerMetricsCollector,
        SchedulerStats,
        TokenizerMetricsCollector,
    )

    # The labels sglang's scheduler (TP 0) and tokenizer manager use.
    sched_labels = {"model_name": name, "engine_type": "unified", "tp_rank": 0, "pp_rank": 0,
                    "moe_ep_rank": 0}  # fmt: skip
    tok_labels = {"model_name": name}
    server_args = _server_args(name)
    scheduler = SchedulerMetricsCollector(labels=sched_labels, server_args=server_args)
    tokenizer = TokenizerMetricsCollector(server_args=server_args, labels=tok_labels)
    scheduler.emit_cache_config_info(page_size=64, num_pages=4096)
    queued = 0
    rng = random.Random(scenario)
    while not stop.is_set():
        if scenario == "healthy":
            stats = SchedulerStats(num_running_reqs=4, num_queue_reqs=1, token_usage=0.42,
                                   num_used_tokens=110_000, max_total_num_tokens=262_144,
                                   gen_throughput=38.0, cache_hit_rate=0.3)  # fmt: skip
            scheduler.increment_realtime_tokens(None, prefill_compute_tokens=256, decode_tokens=20)
            tokenizer.observe_time_to_first_token(tok_labels, rng.uniform(0.2, 0.9))
            tokenizer.observe_inter_token_latency(tok_labels, 0.5, 20)
            tokenizer.observe_one_finished_request(
                tok_labels, prompt_tokens=256, generation_tokens=20, cached_tokens=64,
                e2e_latency=rng.uniform(1.0, 3.0), has_grammar=False, retraction_count=0,
            )  # fmt: skip
        else:
            queued += 1
            stats = SchedulerStats(num_running_reqs=16, num_queue_reqs=queued, token_usage=0.97,
                                   num_used_tokens=254_000)  # fmt: skip
            scheduler.increment_realtime_tokens(None, prefill_compute_tokens=256)
            tokenizer.observe_time_to_first_token(tok_labels, rng.uniform(20.0, 40.0))
        scheduler.log_stats(stats)
        stop.wait(TICK)


def _serve(scenario: str, port: int, api_key: str | None) -> None:
    """One server (a forked child): plan metrics, collectors, HTTP; returns to restart."""
    import uvicorn

    env, name = _plan_env()
    os.environ.update(env)
    stop = threading.Event()
    worker = threading.Thread(target=_traffic, args=(scenario, name, stop), daemon=True)
    worker.start()
    config = uvicorn.Config(_app(api_key), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    if scenario == "overloaded" and os.environ.get("STANDIN_RESTARTED") != "1":
        threading.Timer(RESTART_AFTER, lambda: setattr(server, "should_exit", True)).start()
    server.run()
    stop.set()


def _spawn(scenario: str, port: int, api_key: str | None) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _serve(scenario, port, api_key)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def main() -> None:
    healthy_port, overloaded_port = (int(a) for a in sys.argv[1:3])
    # prometheus_client picks its multiprocess value class when first imported: set a
    # directory before anything imports it (each child then uses its own, from the plan).
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="standin-"))
    _stub_forward_batch_info()
    import sglang.srt.observability.metrics_collector
    import sglang.srt.utils.common  # noqa: F401

    api_key = None
    if os.environ.get("KTHYBRID_API_KEY_FILE"):
        from kthybrid_serve.apikey import read_api_key

        api_key = read_api_key(os.environ["KTHYBRID_API_KEY_FILE"])
    children = {_spawn("healthy", healthy_port, api_key): ("healthy", healthy_port)}
    children[_spawn("overloaded", overloaded_port, api_key)] = ("overloaded", overloaded_port)
    print("stand-in ready", flush=True)
    restarted = False
    while children:
        pid, status = os.wait()
        scenario, port = children.pop(pid)
        if os.waitstatus_to_exitcode(status) != 0 or scenario != "overloaded" or restarted:
            print(f"stand-in: {scenario} failed (status {status}); stopping", flush=True)
            sys.exit(1)
        restarted = True
        print(f"stand-in: {scenario} exited; starting it again", flush=True)
        os.environ["STANDIN_RESTARTED"] = "1"
        children[_spawn(scenario, port, api_key)] = (scenario, port)


if __name__ == "__main__":
    main()
