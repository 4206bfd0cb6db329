"""Every launcher option, described once: flag, KTHYBRID_* variable, type, range, default, help.

`Settings` is the one typed, frozen description. Each field carries its option's
metadata; the argument parser, the README's table, the launcher block of compose's
`.env.example` and the chart's value hints are generated from these fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

from kthybrid_serve.errors import UsageError
from kthybrid_serve.parsers import (
    HUGEPAGE_MODES,
    backend,
    bind_address,
    choice,
    fraction,
    gpu_specs,
    host_port,
    hugepage_mode,
    int_in,
    int_list,
    json_args,
    name,
    parse_bool,
    path,
)

LOG_FORMATS: Final = ("off", "text", "json")
NUMA_POLICIES: Final = ("interleave", "interleave-all", "local", "none")
CPU_VARIANTS: Final = ("amx", "avx512_bf16", "avx512_vbmi", "avx512_vnni", "avx512_base", "avx2")
KT_METHODS: Final = ("MXFP4", "AMXINT4", "AMXINT8", "BF16", "FP8")
# Values that come from outside (environment, flags, manifests) never carry these.

# The subcommands, and which take an option (OptionSpec.commands): the server's options are
# taken by every command that plans a server; convert and chat take their few.
COMMAND_NAMES: Final = (
    "serve",
    "plan",
    "doctor",
    "convert",
    "chat",
    "bench",
    "tune",
    "bench-serve",
)
# bench-serve plans too: its plot draws the plan's CPU decode ceiling.
SERVER_COMMANDS: Final = frozenset({"serve", "plan", "doctor", "bench", "tune", "bench-serve"})
_CONVERT: Final = SERVER_COMMANDS | {"convert"}
_CHAT: Final = SERVER_COMMANDS | {"chat"}
_BENCH_SERVE: Final = frozenset({"bench-serve"})

Value = str | int | float | bool | tuple[str, ...] | tuple[int, ...] | None
T = TypeVar("T", bound=Value)


@dataclass(frozen=True)
class OptionSpec:
    """How one option is spelled, parsed and documented."""

    help: str
    parse: Callable[[str], Value]
    kind: str = "value"  # value, bool, list (a flag that takes several words)
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    shown_default: str | None = None  # for docs, when the default is planned (None)
    helm: str | None = None  # the chart value that sets it, if any
    example: str | None = None  # for .env.example, where the default says nothing
    # The subcommands that take the option: others refuse its flag and ignore its variable.
    commands: frozenset[str] = SERVER_COMMANDS


def option(default: T, spec: OptionSpec) -> T:
    """A dataclass field that is a launcher option (metadata holds the spec)."""
    return field(default=default, metadata={"option": spec})


# -- the options ----------------------------------------------------------------------

_PORT = int_in(1, 65535)
_COUNT = int_in(1, 100_000_000)


@dataclass(frozen=True)
class Settings:
    """Resolved option values; `sources` says, for each one given, where it came from."""

    # fmt: off
    # -- model and CPU expert weights
    model: str = option("/models/DeepSeek-V4-Flash", OptionSpec(
        "model directory (config.json, safetensors)", path, helm="server.model", commands=_CONVERT))
    served_model_name: str | None = option(None, OptionSpec(
        "name clients use", name, shown_default="the model directory's name"))
    kt_weight_path: str | None = option(None, OptionSpec(
        "CPU expert weights: the checkpoint (MXFP4) or converted AMXINT4 weights", path,
        shown_default="the model directory", helm="kt.weightPath",
        example="/models/DeepSeek-V4-Flash-AMXINT4"))
    # -- host and GPUs
    host_root: str = option("/", OptionSpec(
        "read sysfs, procfs and cgroup files below this directory", path, commands=_CONVERT))
    gpu: tuple[str, ...] = option((), OptionSpec(
        "plan for these GPUs instead of NVML's: 'NAME,MEMORY,CC' (env: ';'-separated)",
        gpu_specs, kind="list", metavar="NAME,MEMORY,CC", shown_default="NVML", commands=_CONVERT))
    # -- CPU experts (kt-kernel)
    kt_cpuinfer: int | None = option(None, OptionSpec(
        "CPU expert threads", _COUNT, shown_default="planned", helm="kt.cpuinfer",
        commands=_CONVERT))
    kt_threadpool_count: int | None = option(None, OptionSpec(
        "thread pools, one per NUMA node used", int_in(1, 1024), shown_default="planned",
        commands=_CONVERT))
    kt_numa_nodes: tuple[int, ...] | None = option(None, OptionSpec(
        "NUMA node of each pool, e.g. '0,1'", int_list(0, 1023, unique=True), kind="list",
        shown_default="planned", commands=_CONVERT))
    kt_num_gpu_experts: int | None = option(None, OptionSpec(
        "routed experts per MoE layer kept on the GPU", int_in(0, 1_000_000),
        shown_default="planned", helm="kt.numGpuExperts"))
    kt_method: str | None = option(None, OptionSpec(
        "CPU expert kernel", choice(KT_METHODS, upper=True), choices=KT_METHODS,
        shown_default="from the weights", helm="kt.method"))
    kt_cpu_variant: str | None = option(None, OptionSpec(
        "force kt-kernel's CPU variant (KT_KERNEL_CPU_VARIANT)", choice(CPU_VARIANTS),
        choices=CPU_VARIANTS, shown_default="kt-kernel's detection", commands=_CONVERT))
    kt_gpu_prefill_token_threshold: int = option(4096, OptionSpec(
        "prefill chunks of at least this many tokens run on the GPU", _COUNT))
    kt_enable_dynamic_expert_update: bool = option(True, OptionSpec(
        "re-pick the GPU experts at run time", parse_bool, kind="bool"))
    reserved_cores: int | None = option(None, OptionSpec(
        "physical cores left to the GPU-feeding processes", int_in(0, 1_000_000),
        shown_default="GPUs + 2"))
    numa_policy: str = option("interleave", OptionSpec(
        "memory policy of the CPU experts: interleave over the nodes used, over all nodes, "
        "local, or none", choice(NUMA_POLICIES), choices=NUMA_POLICIES, helm="kt.numaPolicy"))
    mtp: bool = option(False, OptionSpec(
        "MTP speculative decoding (EAGLE, 3 steps, 4 draft tokens)", parse_bool, kind="bool",
        helm="server.mtp"))
    # -- server: address, access, model code
    host: str = option("0.0.0.0", OptionSpec("address the server listens on", bind_address,
        commands=_CHAT))
    port: int = option(30000, OptionSpec("port the server listens on", _PORT, helm="server.port",
        commands=_CHAT))
    api_key_file: str | None = option(None, OptionSpec(
        "file holding the API key clients must send (never passed on a command line)", path,
        shown_default="no key", commands=_CHAT))
    trust_remote_code: bool = option(False, OptionSpec(
        "let transformers run the model repository's own Python code", parse_bool, kind="bool",
        helm="server.trustRemoteCode"))
    # -- sglang: parallelism, context, batching, memory
    tp_size: int | None = option(None, OptionSpec(
        "tensor parallel size", int_in(1, 1024), shown_default="GPUs x nodes",
        helm="server.tpSize"))
    context_length: int = option(16384, OptionSpec(
        "context length in tokens", _COUNT, helm="server.contextLength"))
    chunked_prefill_size: int = option(2048, OptionSpec("chunked prefill size", _COUNT))
    max_prefill_tokens: int = option(2048, OptionSpec("max prefill tokens", _COUNT))
    max_running_requests: int = option(2, OptionSpec("max running requests", _COUNT))
    watchdog_timeout: int = option(1200, OptionSpec("sglang watchdog timeout (s)", _COUNT))
    attention_backend: str = option("flashinfer", OptionSpec("sglang attention backend", backend))
    mem_fraction_static: float = option(0.85, OptionSpec(
        "GPU memory fraction for weights and KV cache", fraction,
        helm="server.memFractionStatic"))
    cuda_graph_bs: tuple[int, ...] = option((1,), OptionSpec(
        "CUDA graph batch sizes, e.g. '1' or '1,2,4'", int_list(1, 4096, unique=True),
        kind="list"))
    disable_radix_cache: bool = option(True, OptionSpec(
        "disable the radix (prefix) cache", parse_bool, kind="bool"))
    skip_server_warmup: bool = option(True, OptionSpec(
        "skip sglang's warm-up request", parse_bool, kind="bool"))
    disable_shared_experts_fusion: bool = option(True, OptionSpec(
        "keep shared experts unfused", parse_bool, kind="bool"))
    # -- host memory
    hugepages: str = option("off", OptionSpec(
        "back the CPU experts with hugepages through glibc's malloc: off, thp (transparent "
        "hugepages) or hugetlb (the reserved 2 MiB pool); see bench/results/hugepages-*.json; "
        "the chart's hugepages.enabled sets true (hugetlb) or false (off)",
        hugepage_mode, choices=HUGEPAGE_MODES))
    # -- multi-node
    nnodes: int = option(1, OptionSpec(
        "number of nodes (multi-node tensor parallel)", int_in(1, 1024), helm="multiNode.size"))
    node_rank: int = option(0, OptionSpec("this node's rank, below nnodes", int_in(0, 1023)))
    dist_init_addr: str | None = option(None, OptionSpec(
        "rank 0's HOST:PORT for multi-node", host_port, shown_default="-"))
    # -- metrics, request logs, tracing (sglang's own; see kthybrid_serve/metrics.py)
    enable_metrics: bool = option(True, OptionSpec(
        "serve /metrics (sglang's --enable-metrics) with the plan's gauges (kthybrid_plan_*)",
        parse_bool, kind="bool", helm="metrics.enabled"))
    metrics_all_schedulers: bool | None = option(None, OptionSpec(
        "every tensor-parallel rank's scheduler records metrics "
        "(--enable-metrics-for-all-schedulers)", parse_bool, kind="bool",
        shown_default="on when tp-size > 1"))
    log_requests: str = option("off", OptionSpec(
        "sglang's request log: off, text or json (--log-requests --log-requests-format)",
        choice(LOG_FORMATS), choices=LOG_FORMATS, helm="metrics.requestLogs"))
    otlp_traces_endpoint: str | None = option(None, OptionSpec(
        "OpenTelemetry collector HOST:PORT for sglang's traces (--enable-trace)", host_port,
        shown_default="no tracing", helm="metrics.otlpTracesEndpoint"))
    # -- anything else sglang takes
    extra_args: tuple[str, ...] = option((), OptionSpec(
        "extra sglang arguments as a JSON array of strings", json_args,
        example='["--log-level", "info"]', helm="server.extraArgs"))
    # -- convert
    output: str | None = option(None, OptionSpec(
        "convert: where to write the AMXINT4 weights", path, shown_default="<model>-AMXINT4",
        commands=frozenset({"convert"})))
    # -- bench-serve (a client of the running server)
    bench_concurrency: tuple[int, ...] | None = option(None, OptionSpec(
        "bench-serve: concurrencies", int_list(1, 4096, unique=True),
        kind="list", shown_default="1,2,4... max running requests",
        helm="helmTest.benchServe.concurrency", commands=_BENCH_SERVE))
    bench_prompt_tokens: int = option(1024, OptionSpec(
        "bench-serve: prompt length in tokens", int_in(1, 1_000_000),
        helm="helmTest.benchServe.promptTokens", commands=_BENCH_SERVE))
    bench_output_tokens: int = option(512, OptionSpec(
        "bench-serve: output tokens per request (EOS ignored)",
        int_in(1, 1_000_000), helm="helmTest.benchServe.outputTokens",
        commands=_BENCH_SERVE))
    bench_duration: int = option(120, OptionSpec(
        "bench-serve: seconds each level measures",
        int_in(1, 86_400), helm="helmTest.benchServe.durationSeconds",
        commands=_BENCH_SERVE))
    bench_warmup: int = option(1, OptionSpec(
        "bench-serve: warm-up requests per worker and level",
        int_in(0, 1000), helm="helmTest.benchServe.warmup",
        commands=_BENCH_SERVE))
    replicas: int = option(1, OptionSpec(
        "servers to split the host into, each with its own GPUs, NUMA nodes and port",
        int_in(1, 256), commands=frozenset({"serve", "plan", "doctor"})))
    replica_index: int | None = option(None, OptionSpec(
        "which of the --replicas servers this one is, from 0", int_in(0, 255),
        commands=frozenset({"serve", "plan", "doctor"})))
    # fmt: on

    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.node_rank >= self.nnodes:
            raise UsageError(
                f"KTHYBRID_NODE_RANK={self.node_rank} must be below KTHYBRID_NNODES={self.nnodes}"
            )
        if self.nnodes > 1 and self.dist_init_addr is None:
            raise UsageError(
                f"KTHYBRID_NNODES={self.nnodes} needs KTHYBRID_DIST_INIT_ADDR (rank 0's HOST:PORT)"
            )

    def source(self, dest: str) -> str:
        """'default', 'flag --x' or 'env KTHYBRID_X'."""
        return self.sources.get(dest, "default")

    def overridden(self, dest: str) -> bool:
        return dest in self.sources


@dataclass(frozen=True)
class Option:
    """One option as the parser and the docs see it."""

    dest: str
    default: Value
    spec: OptionSpec

    @property
    def env(self) -> str:
        return "KTHYBRID_" + self.dest.upper()

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")

    @property
    def shown_default(self) -> str:
        if self.spec.shown_default is not None:
            return self.spec.shown_default
        return format_value(self.default)


def format_value(value: Value) -> str:
    """A value the way a person writes it in a KTHYBRID_* variable."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


OPTIONS: Final[tuple[Option, ...]] = tuple(
    Option(f.name, f.default, f.metadata["option"])  # type: ignore[arg-type]
    for f in dataclasses.fields(Settings)
    if "option" in f.metadata
)
OPTIONS_BY_DEST: Final = {o.dest: o for o in OPTIONS}
ENV_NAMES: Final = frozenset(o.env for o in OPTIONS)


def _check_type(option: Option, value: Value) -> Value:
    """The parsers are typed per option; this ties a value to its field's declared default."""
    expected = type(option.default)
    if value is None or option.default is None or isinstance(value, expected):
        return value
    if expected is float and isinstance(value, int):
        return float(value)
    raise UsageError(f"{option.flag}: {value!r} is not a {expected.__name__}")


def resolve_settings(
    cli: Mapping[str, Value], environ: Mapping[str, str], command: str | None = None
) -> Settings:
    """A flag beats KTHYBRID_*, which beats the default. Raises UsageError on a bad value.

    With a `command`, only its options are read: the environment is shared by the compose
    services, so a KTHYBRID_* variable another command takes is left alone, unparsed.
    """
    values: dict[str, Value] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        if command is not None and command not in opt.spec.commands:
            continue
        given = cli.get(opt.dest)
        if given is not None:
            values[opt.dest] = _check_type(opt, given)
            sources[opt.dest] = f"flag {opt.flag}"
        elif environ.get(opt.env, "").strip() != "":
            raw = environ[opt.env]
            try:
                values[opt.dest] = opt.spec.parse(raw)
            except ValueError as error:
                raise UsageError(f"{opt.env}={_shown(raw)}: {error}") from None
            sources[opt.dest] = f"env {opt.env}"
    if "KTHYBRID_API_KEY_FILE" in environ and not environ["KTHYBRID_API_KEY_FILE"].strip():
        # Set but empty is a mistake (or a later duplicate in a manifest), never "no key".
        raise UsageError(
            "KTHYBRID_API_KEY_FILE is set but empty: point it at the key file, or unset it to "
            "serve without a key"
        )
    for stale in ("KTHYBRID_TARGETS_FILE",):
        if environ.get(stale):
            raise UsageError(f"{stale} is no longer read (the launcher carries its own); unset it")
    return Settings(**values, sources=sources)  # type: ignore[arg-type]


def _shown(raw: str) -> str:
    """A hostile value quoted and cut short enough for one line."""
    return repr(raw if len(raw) <= 60 else raw[:60] + "...")


def default_settings(**overrides: Value) -> Settings:
    """Settings as if these were given as flags (tests and the library API)."""
    return resolve_settings(overrides, {})
