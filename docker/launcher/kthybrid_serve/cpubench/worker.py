"""One measurement of kt-kernel's CPU experts, in a process of its own.

`python -m kthybrid_serve.cpubench.worker '<spec JSON>'` loads kt-kernel's extension, builds
`layers` MoE layers of `experts` synthetic experts each at the model's shapes in the
method's own weight layout, runs single-token decode through them (top-k experts per
layer, routed at random, every layer in turn, one submit and sync per layer as sglang-kt
does), and prints one JSON object on stdout. kt-kernel's own chatter (it printf()s to fd 1)
goes to stderr. The process exits 0 with `"ok": true`, or 1 with `"ok": false` and an
`error` line; a crash inside kt-kernel shows as a signal to the caller.

Why a process per measurement: kt-kernel pins its pools when they are made and keeps its
buffers until exit, a thread count is fixed per pool, and the hugepage variants differ in
the environment glibc reads at start (GLIBC_TUNABLES). A fresh process per run gives each
run fresh memory and the environment it is meant to have.

Only the standard library and kt-kernel's extension are used. The extension is loaded
through kt-kernel's own variant loader (kthybrid_serve.ktkernel.load_extension), without
importing kt_kernel's Python API, which imports torch: the extension does not link
libtorch, and a run then starts in milliseconds instead of seconds.

Synthetic weights: expert contents do not change the work a kernel does, except where a
format has a fast path for some values. MXFP4 scales are therefore powers of two, as E8M0
scales are (kt-kernel compacts them to exponent bytes only then), and BF16 values are
finite. All experts of all layers are copied by kt-kernel from one source expert into
buffers of their own (kt-kernel's load copies and repacks; it keeps no pointer to the
source), so the working set is real memory while the source stays a few megabytes.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kthybrid_serve.cpubench.synthetic import Buffer, SourceExpert, bf16_bits, source_expert
from kthybrid_serve.errors import WorkerError
from kthybrid_serve.ktkernel import load_extension, moe_class
from kthybrid_serve.model.experts import METHODS, MXFP4_GROUP, bytes_per_expert

SMAPS_KEYS = ("Rss", "Anonymous", "AnonHugePages", "Shared_Hugetlb", "Private_Hugetlb")
ROUTING_ROWS = 4096


@dataclass(frozen=True)
class RunSpec:
    """What one worker measures."""

    method: str
    hidden: int
    intermediate: int
    top_k: int
    experts: int
    layers: int
    pools: tuple[tuple[int, int], ...]  # (NUMA node, threads) per pool
    seconds: float = 1.5
    warmup_seconds: float = 0.3
    segments: int = 5
    seed: int = 20240611

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        pools = tuple((int(node), int(threads)) for node, threads in data["pools"])
        return cls(
            method=str(data["method"]),
            hidden=int(data["hidden"]),
            intermediate=int(data["intermediate"]),
            top_k=int(data["top_k"]),
            experts=int(data["experts"]),
            layers=int(data["layers"]),
            pools=pools,
            seconds=float(data.get("seconds", 1.5)),
            warmup_seconds=float(data.get("warmup_seconds", 0.3)),
            segments=int(data.get("segments", 5)),
            seed=int(data.get("seed", 20240611)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "hidden": self.hidden,
            "intermediate": self.intermediate,
            "top_k": self.top_k,
            "experts": self.experts,
            "layers": self.layers,
            "pools": [list(p) for p in self.pools],
            "seconds": self.seconds,
            "warmup_seconds": self.warmup_seconds,
            "segments": self.segments,
            "seed": self.seed,
        }


def smaps_rollup() -> dict[str, int]:
    """This process's memory counters (bytes) from /proc/self/smaps_rollup."""
    counters = dict.fromkeys(SMAPS_KEYS, 0)
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return counters
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in counters:
            counters[key] = int(rest.split()[0]) * 1024
    return counters


@contextmanager
def native_output_to_stderr() -> Iterator[int]:
    """Point fd 1 at stderr while kt-kernel runs; yields a duplicate of the real stdout."""
    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        yield result_fd
    finally:
        sys.stdout.flush()
        libc = ctypes.CDLL(None)
        libc.fflush(None)


def _pool_config(ext: Any, spec: RunSpec) -> Any:
    """kt-kernel's worker pools: pool i has the spec's thread count, pinned to its node."""
    pool_config = ext.WorkerPoolConfig()
    pool_config.subpool_count = len(spec.pools)
    pool_config.subpool_numa_map = [node for node, _ in spec.pools]
    pool_config.subpool_thread_count = [threads for _, threads in spec.pools]
    return pool_config


def _load_layers(
    ext: Any, cls: Any, cpu_infer: Any, spec: RunSpec, source: SourceExpert, pointers: Any
) -> tuple[list[Any], list[Any]]:
    """`spec.layers` MoE layers, each loading every expert from the one source expert."""
    mask, identity = pointers
    experts, pools = spec.experts, len(spec.pools)
    layers: list[Any] = []
    configs: list[Any] = []
    copies = pools if source.per_pool else 1
    weight_ptrs = [[source.weights.address] * experts for _ in range(copies)]
    scale_ptrs = [[source.scales.address if source.scales else 0] * experts for _ in range(copies)]
    for layer in range(spec.layers):
        config = ext.moe.MOEConfig(
            experts, spec.top_k, spec.hidden, spec.intermediate, ctypes.addressof(mask)
        )
        config.layer_idx = layer
        config.max_len = 64
        config.pool = cpu_infer.backend_
        config.gate_projs = weight_ptrs
        config.up_projs = weight_ptrs
        config.down_projs = weight_ptrs
        config.gate_scales = scale_ptrs
        config.up_scales = scale_ptrs
        config.down_scales = scale_ptrs
        if spec.method == "MXFP4":
            config.quant_config.bits = 4
            config.quant_config.group_size = MXFP4_GROUP
            config.quant_config.zero_point = False
        moe = cls(config)
        cpu_infer.submit(moe.load_weights_task(ctypes.addressof(identity)))
        cpu_infer.sync()
        layers.append(moe)
        configs.append(config)
    return layers, configs


def _decode_step(
    cpu_infer: Any, layers: list[Any], spec: RunSpec, rng: random.Random
) -> Callable[[], None]:
    """One token's decode: every layer in turn, top-k random experts, a submit and sync each."""
    top_k, experts = spec.top_k, spec.experts
    routing = (ctypes.c_int64 * (ROUTING_ROWS * top_k))()
    for row in range(ROUTING_ROWS):
        routing[row * top_k : (row + 1) * top_k] = rng.sample(range(experts), top_k)
    ids_base = ctypes.addressof(routing)
    weights = (ctypes.c_float * top_k)(*([1.0 / top_k] * top_k))
    qlen = (ctypes.c_int32 * 1)(1)
    hidden_in = Buffer(bf16_bits(rng, spec.hidden, 118, 126))
    hidden_out = Buffer(bytes(2 * spec.hidden))
    submit, sync = cpu_infer.submit, cpu_infer.sync
    tasks: list[Callable[..., Any]] = [moe.forward_task for moe in layers]
    row = 0

    def token() -> None:
        nonlocal row
        _ = routing  # the routing table lives as long as the step that reads it
        for forward in tasks:
            ids = ids_base + (row % ROUTING_ROWS) * top_k * 8
            row += 1
            submit(
                forward(
                    ctypes.addressof(qlen), top_k, ids, ctypes.addressof(weights),
                    hidden_in.address, hidden_out.address, False,
                )
            )  # fmt: skip
            sync()

    return token


def _timed(
    token: Callable[[], None], spec: RunSpec, per_token: int
) -> tuple[list[float], int, float]:
    """Warm up, then GB/s per segment; returns (rates, tokens, seconds measured)."""
    warm_end = time.perf_counter() + spec.warmup_seconds
    token()
    while time.perf_counter() < warm_end:
        token()
    segment_seconds = spec.seconds / spec.segments
    rates: list[float] = []
    tokens_total = 0
    measured = 0.0
    for _ in range(spec.segments):
        tokens = 0
        begin = time.perf_counter()
        while True:
            token()
            tokens += 1
            elapsed = time.perf_counter() - begin
            if elapsed >= segment_seconds:
                break
        rates.append(tokens * per_token / elapsed / 1e9)
        tokens_total += tokens
        measured += elapsed
    return rates, tokens_total, measured


def measure(spec: RunSpec) -> dict[str, Any]:
    if spec.method not in METHODS:
        raise WorkerError(
            f"method {spec.method!r} cannot be measured; use one of {', '.join(METHODS)}"
        )
    if not spec.pools or any(threads < 1 for _, threads in spec.pools):
        raise WorkerError(f"every pool needs at least one thread: {list(spec.pools)}")
    if spec.top_k > spec.experts:
        raise WorkerError(f"top-k {spec.top_k} exceeds the {spec.experts} experts per layer")
    ext, variant, version = load_extension()
    cls = moe_class(ext, spec.method)
    rng = random.Random(spec.seed)
    expert_bytes = bytes_per_expert(spec.method, spec.hidden, spec.intermediate)
    source = source_expert(spec, rng)
    experts = spec.experts
    pool_config = _pool_config(ext, spec)

    mask = (ctypes.c_bool * experts)()  # every expert on the CPU
    identity = (ctypes.c_int64 * experts)(*range(experts))
    smaps_before = smaps_rollup()
    start = time.perf_counter()
    cpu_infer = ext.CPUInfer(pool_config)
    layers, configs = _load_layers(ext, cls, cpu_infer, spec, source, (mask, identity))
    load_seconds = time.perf_counter() - start
    smaps_after = smaps_rollup()

    token = _decode_step(cpu_infer, layers, spec, rng)
    rates, tokens_total, measured = _timed(token, spec, len(layers) * spec.top_k * expert_bytes)
    del layers, configs
    del cpu_infer
    return {
        "ok": True,
        "error": None,
        "spec": spec.to_json(),
        "cpu_variant": variant,
        "moe_class": getattr(cls, "__name__", str(cls)),
        "kt_kernel_version": version,
        "bytes_per_expert": expert_bytes,
        "loaded_bytes": spec.layers * experts * expert_bytes,
        "load_seconds": round(load_seconds, 3),
        "tokens": tokens_total,
        "seconds": round(measured, 3),
        "tokens_per_second": round(tokens_total / measured, 2),
        "gbps": round(statistics.median(rates), 2),
        "gbps_segments": [round(r, 2) for r in rates],
        "smaps_before_load": smaps_before,
        "smaps_after_load": smaps_after,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "glibc": os.confstr("CS_GNU_LIBC_VERSION"),
    }


def main(argv: list[str]) -> int:
    with native_output_to_stderr() as result_fd:
        try:
            if len(argv) != 1:
                raise WorkerError("usage: python -m kthybrid_serve.cpubench.worker '<spec JSON>'")
            try:
                spec = RunSpec.from_json(json.loads(argv[0]))
            except (ValueError, KeyError, TypeError) as error:
                raise WorkerError(f"bad run spec: {error}") from error
            result = measure(spec)
        except WorkerError as error:
            result = {"ok": False, "error": str(error)}
        except (RuntimeError, OSError, ImportError) as error:
            result = {"ok": False, "error": f"kt-kernel failed: {type(error).__name__}: {error}"}
        os.write(result_fd, (json.dumps(result) + "\n").encode())
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
