"""The launcher's options as data: flag, KTHYBRID_* variable, type, default, value source."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kthybrid_serve.host import parse_gpu_spec

NUMA_POLICIES = ("interleave", "local", "none")
CPU_VARIANTS = ("amx", "avx512_bf16", "avx512_vbmi", "avx512_vnni", "avx512_base", "avx2")
KT_METHODS = ("MXFP4", "AMXINT4", "AMXINT8", "BF16", "FP8")


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_int_list(text: str) -> list[int]:
    return [int(part) for part in re.split(r"[,\s]+", text.strip()) if part]


def parse_gpu_list(text: str) -> list[str]:
    specs = [part.strip() for part in text.split(";") if part.strip()]
    for index, spec in enumerate(specs):
        parse_gpu_spec(spec, index)  # raises ValueError with the reason
    return specs


def parse_choice(choices: tuple[str, ...], upper: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected a number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise ValueError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


@dataclass(frozen=True)
class Option:
    """One launcher option: `--name` on the command line, KTHYBRID_NAME in the environment."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    kind: str = "value"  # value, bool, list
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return "KTHYBRID_" + self.dest.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name


OPTIONS: tuple[Option, ...] = (
    Option("model", str, "/models/DeepSeek-V4-Flash", "model directory (config.json, safetensors)"),
    Option("served-model-name", str, None, "name clients use; default: the model directory's name"),
    Option(
        "kt-weight-path", str, None, "CPU expert weights: the checkpoint (MXFP4) or AMXINT4 dir"
    ),
    Option("host-root", str, "/", "read sysfs/procfs/cgroup below this directory"),
    Option(
        "gpu",
        parse_gpu_list,
        None,
        "plan for this GPU, not NVML's: 'NAME,MEMORY,CC' (repeatable; env: ';'-separated)",
        kind="list",
        metavar="NAME,MEMORY,CC",
    ),
    Option("kt-cpuinfer", positive_int, None, "CPU expert threads (default: planned)"),
    Option("kt-threadpool-count", positive_int, None, "thread pools, one per NUMA node used"),
    Option("kt-numa-nodes", parse_int_list, None, "NUMA node of each pool, e.g. '0,1'", "list"),
    Option(
        "kt-num-gpu-experts", positive_int, None, "GPU experts per MoE layer (default: planned)"
    ),
    Option("kt-method", parse_choice(KT_METHODS, upper=True), None, "CPU expert kernel"),
    Option(
        "kt-cpu-variant",
        parse_choice(CPU_VARIANTS),
        None,
        "force kt-kernel's CPU variant (KT_KERNEL_CPU_VARIANT); default: its own detection",
    ),
    Option("kt-gpu-prefill-token-threshold", positive_int, 4096, "full-GPU prefill above this"),
    Option(
        "kt-enable-dynamic-expert-update",
        parse_bool,
        True,
        "re-pick GPU experts at runtime",
        "bool",
    ),
    Option(
        "reserved-cores", positive_int, None, "physical cores left to the GPU-feeding processes"
    ),
    Option("numa-policy", parse_choice(NUMA_POLICIES), "interleave", "interleave, local or none"),
    Option("mtp", parse_bool, False, "MTP speculative decoding (EAGLE, 3 steps, 4 drafts)", "bool"),
    Option("host", str, "0.0.0.0", "address the server listens on"),
    Option("port", positive_int, 30000, "port the server listens on"),
    Option("tp-size", positive_int, None, "tensor parallel size (default: all GPUs)"),
    Option("context-length", positive_int, 16384, "context length"),
    Option("chunked-prefill-size", positive_int, 2048, "chunked prefill size"),
    Option("max-prefill-tokens", positive_int, 2048, "max prefill tokens"),
    Option("max-running-requests", positive_int, 2, "max running requests"),
    Option("watchdog-timeout", positive_int, 1200, "sglang watchdog timeout (s)"),
    Option("attention-backend", str, "flashinfer", "sglang attention backend"),
    Option("mem-fraction-static", fraction, 0.85, "GPU memory fraction for weights and KV cache"),
    Option(
        "cuda-graph-bs", parse_int_list, [1], "CUDA graph batch sizes, e.g. '1' or '1,2,4'", "list"
    ),
    Option("disable-radix-cache", parse_bool, True, "disable the radix (prefix) cache", "bool"),
    Option("skip-server-warmup", parse_bool, True, "skip sglang's warm-up request", "bool"),
    Option(
        "disable-shared-experts-fusion", parse_bool, True, "keep shared experts unfused", "bool"
    ),
    Option("hugepages", parse_bool, False, "require hugepages for the CPU experts", "bool"),
    Option("nnodes", positive_int, 1, "number of nodes (multi-node tensor parallel)"),
    Option("node-rank", positive_int, 0, "this node's rank"),
    Option("dist-init-addr", str, None, "rank-0 address for multi-node, host:port"),
    Option("extra-args", str, "", "extra sglang arguments, shell-split"),
    Option("output", str, None, "convert: where to write AMXINT4 weights"),
)

OPTIONS_BY_DEST = {o.dest: o for o in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """Resolved option values plus, for each overridden one, where it came from."""

    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    def get(self, dest: str) -> Any:
        return self.values[dest]

    def source(self, dest: str) -> str:
        """'default', 'flag --x' or 'env KTHYBRID_X'."""
        return self.sources.get(dest, "default")

    def overridden(self, dest: str) -> bool:
        return dest in self.sources

    @property
    def extra_args(self) -> list[str]:
        return shlex.split(str(self.values["extra_args"]))


def resolve_settings(cli: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """A flag beats KTHYBRID_*, which beats the default. Raises ValueError on a bad env value."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        given = cli.get(option.dest)
        if given is not None:
            values[option.dest] = given
            sources[option.dest] = f"flag {option.flag}"
        elif option.env in environ and environ[option.env].strip() != "":
            try:
                values[option.dest] = option.parse(environ[option.env])
            except ValueError as error:
                raise ValueError(f"{option.env}={environ[option.env]!r}: {error}") from error
            sources[option.dest] = f"env {option.env}"
        else:
            values[option.dest] = option.default
    return Settings(values=values, sources=sources)


def default_settings(**overrides: Any) -> Settings:
    """Settings as if these were given as flags (for tests and the library API)."""
    return resolve_settings(overrides, {})
