"""The `kthybrid-serve` command: parse options, call the library, turn refusals into one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import NoReturn

from kthybrid_serve import __version__
from kthybrid_serve.errors import LauncherError, UsageError
from kthybrid_serve.external import reachable_host
from kthybrid_serve.metrics import prepare_metrics
from kthybrid_serve.report import (
    checks_json,
    error_json,
    helm_values_yaml,
    plan_json,
    render_checks,
    render_plan,
    render_replicas,
    replicas_json,
)
from kthybrid_serve.settings import OPTIONS, Option, Settings, Value, resolve_settings
from kthybrid_serve.validate import check_numactl
from kthybrid_serve.workflow import (
    Planned,
    doctor,
    plan_and_validate,
    plan_replicas_and_validate,
    prepare_conversion,
    replica_mode,
    serve_replica_index,
)

COMMANDS = {
    "serve": "print the plan, check it, then exec the server (the default)",
    "plan": "print the plan with a reason for each value",
    "doctor": "run every check and report each",
    "convert": "convert the MXFP4 routed experts to kt-kernel's AMXINT4 layout (resumable)",
    "chat": "chat with the running server from the terminal",
    "bench": "measure kt-kernel's CPU experts: the plan's threads, a sweep, the read bandwidth",
    "tune": "measure, then store the best thread count for this host, model shape and method",
    "bench-serve": "measure the running server: output tokens/s, TTFT and inter-token latency "
    "at each concurrency",
}


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        # prog is "kthybrid-serve" or "kthybrid-serve COMMAND": the command's own help.
        raise UsageError(f"{message} (see {self.prog} --help)")


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    help_text = f"{option.spec.help} [env {option.env}; default {option.shown_default or '-'}]"
    if option.spec.kind == "bool":
        parser.add_argument(option.flag, dest=option.dest, default=None,
                            action=argparse.BooleanOptionalAction, help=help_text)  # fmt: skip
    elif option.spec.kind == "list":
        # Raw words, joined and parsed once below, so that checks span every word.
        action = "append" if option.dest == "gpu" else "extend"
        nargs = None if option.dest == "gpu" else "+"
        parser.add_argument(option.flag, dest=option.dest, default=None, action=action,
                            nargs=nargs, metavar=option.spec.metavar, help=help_text)  # fmt: skip
    else:
        parser.add_argument(option.flag, dest=option.dest, default=None,
                            metavar=option.spec.metavar, help=help_text)  # fmt: skip


def build_parser() -> Parser:
    parser = Parser(
        prog="kthybrid-serve",
        description="Plan, check and start a CPU-GPU hybrid sglang-kt server. Every --option "
        "can also be set as KTHYBRID_OPTION; a flag beats the variable.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        for option in OPTIONS:
            if name in option.spec.commands:
                _add_option(command, option)
        if name in {"plan", "doctor", "bench", "bench-serve"}:
            command.add_argument("--json", action="store_true", help="print JSON")
        if name == "plan":
            command.add_argument(
                "--helm-values",
                action="store_true",
                help="print the chart's hostMemory values for this plan",
            )
            command.add_argument(
                "--fleet-env",
                action="store_true",
                help="print compose.fleet.yaml's FLEET_<i>_* .env lines for --replicas N",
            )
    return parser


def _parsed_options(args: argparse.Namespace) -> dict[str, Value]:
    """Flag values parsed with their option's parser; lists joined and parsed as one."""
    values: dict[str, Value] = {}
    for option in OPTIONS:
        raw = getattr(args, option.dest, None)
        if raw is None:
            continue
        if isinstance(raw, bool):
            values[option.dest] = raw
            continue
        text = (";" if option.dest == "gpu" else ",").join(raw) if isinstance(raw, list) else raw
        try:
            values[option.dest] = option.spec.parse(text)
        except ValueError as error:
            raise UsageError(f"{option.flag} {text[:60]!r}: {error}") from None
    return values


def _exec(argv: Sequence[str], env: Mapping[str, str]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: signals (SIGTERM from docker stop / Kubernetes) reach the server.
    os.execvpe(argv[0], list(argv), dict(env))
    return 0  # not reached


def run_replica_plan(settings: Settings, as_json: bool, fleet_env: bool) -> int:
    """`plan --replicas N` without --replica-index: every replica, or the fleet's .env lines."""
    planned = plan_replicas_and_validate(settings, os.environ)
    if fleet_env:
        print("\n".join(planned.replicas.fleet_env()))
    elif as_json:
        print(json.dumps(replicas_json(planned.replicas, planned.host, planned.model), indent=2))
    else:
        print(render_replicas(planned.replicas, planned.host, planned.model))
    return 0


def _planned(settings: Settings, index: int | None) -> Planned:
    """The plan of this server: the whole host's, or one replica's (--replica-index)."""
    if index is None:
        return plan_and_validate(settings, os.environ)
    return plan_replicas_and_validate(settings, os.environ).chosen(index)


def run_plan(settings: Settings, as_json: bool, helm: bool, fleet_env: bool = False) -> int:
    if (fleet_env or replica_mode(settings)) and settings.replica_index is None and not helm:
        return run_replica_plan(settings, as_json, fleet_env)
    if fleet_env:
        raise UsageError("--fleet-env prints every replica's lines: drop --replica-index")
    index = settings.replica_index
    if index is None and replica_mode(settings):
        index = 0  # --helm-values: a pod holds one replica
    planned = _planned(settings, index)
    if helm:
        print(helm_values_yaml(planned.plan))
    elif as_json:
        print(json.dumps(plan_json(planned.plan, planned.host, planned.model), indent=2))
    else:
        print(render_plan(planned.plan, planned.host, planned.model))
    return 0


def run_serve(settings: Settings) -> int:
    planned = _planned(settings, serve_replica_index(settings) if replica_mode(settings) else None)
    print(render_plan(planned.plan, planned.host, planned.model), flush=True)
    numactl = check_numactl(planned.plan)
    if numactl.error is not None:
        raise numactl.error
    env = {k: v for k, v in os.environ.items() if k not in planned.plan.env_unset}
    env.update(planned.plan.env)
    if settings.enable_metrics:
        name = settings.served_model_name or planned.model.served_name
        env.update(prepare_metrics(planned.plan, settings, name, env, time.time()))
    return _exec(planned.plan.argv, env)


def run_doctor(settings: Settings, as_json: bool) -> int:
    checks = doctor(settings, os.environ)
    if as_json:
        print(json.dumps(checks_json(checks), indent=2))
    else:
        print(render_checks(checks))
    failed = [c.error for c in checks if c.error is not None]
    return failed[0].exit_code if failed else 0


def run_convert(settings: Settings) -> int:
    from kthybrid_serve.convert import convert, plan_conversion

    request, notes = prepare_conversion(settings)
    if settings.kt_cpu_variant is not None:
        os.environ["KT_KERNEL_CPU_VARIANT"] = settings.kt_cpu_variant  # read by kt-kernel's import
    for note in notes:
        print(note, flush=True)
    convert(plan_conversion(request))
    return 0


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_bench(settings: Settings, as_json: bool) -> int:
    from kthybrid_serve.cpubench.measure import run_bench_command
    from kthybrid_serve.cpubench.plot import render_table

    result = run_bench_command(settings, os.environ, _progress)
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    print(render_table(result))
    print(f"\nwrote {result['json_path']}")
    print(
        f"wrote {result['png_path']}" if result["png_path"] else f"no plot: {result['plot_error']}"
    )
    return 0


def run_tune(settings: Settings) -> int:
    from kthybrid_serve.cpubench.measure import run_tune_command
    from kthybrid_serve.cpubench.plot import render_table

    path, chosen, result = run_tune_command(settings, os.environ, _progress)
    print(render_table(result))
    layout = ", ".join(
        f"node {n}: {t}"
        for n, t in zip(chosen["numa_nodes"], chosen["threads_per_pool"], strict=True)
    )
    print(
        f"\nstored {path}: {chosen['threads']} threads ({layout}), {chosen['gbps']:.1f} GB/s; "
        f"plan and serve use it on this host for this model shape and method (the rule gives "
        f"{result['plan_threads']})"
    )
    return 0


def run_chat(settings: Settings) -> int:
    from kthybrid_serve.apikey import read_api_key
    from kthybrid_serve.client.chat import chat_loop

    key = read_api_key(settings.api_key_file) if settings.api_key_file else None
    return chat_loop(f"http://{reachable_host(settings.host)}:{settings.port}/v1", key)


def run_bench_serve(settings: Settings, as_json: bool) -> int:
    from kthybrid_serve.client.benchserve_progress import SweepProgress
    from kthybrid_serve.client.benchserve_run import bench_serve, sweep_request
    from kthybrid_serve.client.benchserve_stats import render_table
    from kthybrid_serve.workflow import serving_ceiling

    request = sweep_request(settings)
    ceiling, note = serving_ceiling(settings, os.environ)
    progress = SweepProgress(len(request.concurrency), request.duration_s, sys.stderr)
    try:
        result = bench_serve(request, ceiling, note, os.environ, progress)
    except KeyboardInterrupt:
        print("\nkthybrid-serve: bench-serve stopped (Ctrl-C); nothing written", file=sys.stderr)
        return 130
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    print(render_table(result))
    print(f"\nwrote {result['json_path']}")
    png = result["png_path"]
    print(f"wrote {png}" if png else f"no plot: {result['plot_error']}")
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    settings = resolve_settings(_parsed_options(args), os.environ, args.command)
    if args.command == "plan":
        return run_plan(settings, bool(args.json), bool(args.helm_values), bool(args.fleet_env))
    if args.command == "doctor":
        return run_doctor(settings, bool(args.json))
    if args.command == "convert":
        return run_convert(settings)
    if args.command == "chat":
        return run_chat(settings)
    if args.command == "bench":
        return run_bench(settings, bool(args.json))
    if args.command == "tune":
        return run_tune(settings)
    if args.command == "bench-serve":
        return run_bench_serve(settings, bool(args.json))
    return run_serve(settings)


def _one_line(message: str) -> str:
    """Hostile input can put newlines into a message: escape every control character."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def _refuse(code: int, message: str, as_json: bool) -> int:
    message = _one_line(message)
    if as_json:
        print(json.dumps(error_json(code, message)))
    print(f"kthybrid-serve: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in {*COMMANDS, "-h", "--help", "--version"}:
        args_list.insert(0, "serve")
    as_json = "--json" in args_list
    try:
        return _dispatch(build_parser().parse_args(args_list))
    except LauncherError as error:
        return _refuse(error.exit_code, error.message, as_json)
    except OSError as error:
        return _refuse(1, f"{error}; check the paths and permissions", as_json)
