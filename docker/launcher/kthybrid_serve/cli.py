"""The `kthybrid-serve` command: parse options, call the library, turn refusals into one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kthybrid_serve import __version__
from kthybrid_serve.errors import LauncherError
from kthybrid_serve.external import chat_argv, convert_argv, find_convert_script
from kthybrid_serve.host import parse_gpu_spec
from kthybrid_serve.report import checks_json, plan_json, render_checks, render_plan
from kthybrid_serve.settings import OPTIONS, Option, Settings, resolve_settings
from kthybrid_serve.validate import check_numactl
from kthybrid_serve.workflow import doctor, plan_and_validate, prepare_conversion

COMMANDS = ("serve", "plan", "doctor", "convert", "chat")


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    return convert


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    help_text = f"{option.help} [env {option.env}; default {option.default!r}]"
    if option.kind == "bool":
        parser.add_argument(
            option.flag, dest=option.dest, action=argparse.BooleanOptionalAction,
            default=None, help=help_text,
        )  # fmt: skip
    elif option.dest == "gpu":
        parser.add_argument(
            option.flag, dest=option.dest, action="append", default=None,
            type=_argparse_type(lambda s: (parse_gpu_spec(s, 0), s)[1]),
            metavar=option.metavar, help=help_text,
        )  # fmt: skip
    elif option.kind == "list":
        parser.add_argument(
            option.flag, dest=option.dest, nargs="+", default=None,
            type=_argparse_type(option.parse), help=help_text,
        )  # fmt: skip
    else:
        parser.add_argument(
            option.flag, dest=option.dest, default=None,
            type=_argparse_type(option.parse), help=help_text,
        )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    for option in OPTIONS:
        _add_option(common, option)
    parser = argparse.ArgumentParser(
        prog="kthybrid-serve",
        description="Plan, check and start a CPU-GPU hybrid sglang-kt server. Every --option "
        "can also be set as KTHYBRID_OPTION; a flag beats the variable.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    helps = {
        "serve": "print the plan, check it, then exec the server (the default)",
        "plan": "print the plan with a reason for each value",
        "doctor": "run every check and report each",
        "convert": "convert the MXFP4 experts to AMXINT4 with kt-kernel's converter",
        "chat": "open `kt chat` against the server",
    }
    for name in COMMANDS:
        command = sub.add_parser(name, parents=[common], help=helps[name], description=helps[name])
        if name in {"plan", "doctor"}:
            command.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _flatten(values: dict[str, Any]) -> dict[str, Any]:
    # `--kt-numa-nodes 0,1 2` arrives as [[0, 1], [2]].
    for dest in ("kt_numa_nodes", "cuda_graph_bs"):
        if values.get(dest) is not None:
            values[dest] = [item for group in values[dest] for item in group]
    return values


def _exec(argv: Sequence[str], env: Mapping[str, str]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: signals (SIGTERM from docker stop / Kubernetes) reach the server.
    os.execvpe(argv[0], list(argv), dict(env))
    return 0  # not reached


def run_plan(settings: Settings, as_json: bool) -> int:
    planned = plan_and_validate(settings, os.environ)
    if as_json:
        print(json.dumps(plan_json(planned.plan, planned.host, planned.model), indent=2))
    else:
        print(render_plan(planned.plan, planned.host, planned.model))
    return 0


def run_serve(settings: Settings) -> int:
    planned = plan_and_validate(settings, os.environ)
    print(render_plan(planned.plan, planned.host, planned.model), flush=True)
    numactl = check_numactl(planned.plan)
    if numactl.error is not None:
        raise numactl.error
    env = {k: v for k, v in os.environ.items() if k not in planned.plan.env_unset}
    env.update(planned.plan.env)
    return _exec(planned.plan.argv, env)


def run_doctor(settings: Settings, as_json: bool) -> int:
    checks = doctor(settings, os.environ)
    if as_json:
        print(json.dumps(checks_json(checks), indent=2))
    else:
        print(render_checks(checks))
    failed = [c for c in checks if c.error is not None]
    return failed[0].error.exit_code if failed and failed[0].error else 0


def run_convert(settings: Settings) -> int:
    model, threads, pools = prepare_conversion(settings, os.environ)
    output = str(settings.get("output") or f"{model.path.rstrip('/')}-AMXINT4")
    argv = convert_argv(find_convert_script(os.environ), model.path, output, threads, pools)
    print("converting:", " ".join(argv), flush=True)
    print(
        f"then serve with KTHYBRID_KT_WEIGHT_PATH={output} KTHYBRID_KT_METHOD=AMXINT4 "
        f"KTHYBRID_KT_THREADPOOL_COUNT={pools}",
        flush=True,
    )
    return _exec(argv, os.environ)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in {*COMMANDS, "-h", "--help", "--version"}:
        args_list.insert(0, "serve")
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        settings = resolve_settings(_flatten(vars(args)), os.environ)
    except ValueError as error:
        parser.error(str(error))
    try:
        if args.command == "plan":
            return run_plan(settings, bool(args.json))
        if args.command == "doctor":
            return run_doctor(settings, bool(args.json))
        if args.command == "convert":
            return run_convert(settings)
        if args.command == "chat":
            chat = chat_argv(str(settings.get("host")), int(settings.get("port")))
            return _exec(chat, os.environ)
        return run_serve(settings)
    except LauncherError as error:
        print(f"kthybrid-serve: error: {error.message}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        print(f"kthybrid-serve: error: {error}; check the paths and permissions", file=sys.stderr)
        return 1
