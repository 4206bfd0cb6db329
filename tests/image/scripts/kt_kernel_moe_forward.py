"""One small MoE forward on kt-kernel's CPU kernels, checked against an independent reference.

What a passing run proves, inside the image on the host it runs on:

(a) kt-kernel loaded the CPU variant that the host's /proc/cpuinfo flags call for. The expected
    variant is derived here, from the flags alone, by the rules kt_kernel/_cpu_detect.py
    documents (amx needs amx_tile+amx_int8+amx_bf16 on top of everything avx512_bf16 needs;
    avx512_bf16 needs avx512f+avx512bw+avx512_vnni+avx512_vbmi+avx512_bf16; avx512_vbmi drops
    avx512_bf16; avx512_vnni drops avx512_vbmi; avx512_base is avx512f+avx512bw; else avx2), and
    compared with kt_kernel.__cpu_variant__, the variant the loaded extension reports of itself.
    A variant that needs AMX is never expected on a host without the AMX flags.

(b) A MoE forward computed by kt-kernel's BF16 expert kernel (the class kt-kernel's own
    NativeMoEWrapper picks for method "BF16": AMXBF16_MOE where the variant has it, which the
    avx512 variants build without AMX and, below avx512_bf16, without AVX512-BF16 instructions;
    else AVX2BF16_MOE) matches a float64 numpy reference, for each token t:
    out[t] = sum over t's top-k experts e of w[t, e] * down_e(silu(gate_e(x_t)) * up_e(x_t)).
    Weights and inputs are bf16 values, so the reference sees exactly the numbers the kernel
    sees; what differs is the kernel's bf16 rounding of intermediates and of the output, each
    at most half a bf16 ulp, 2**-8 relative (bf16 keeps 8 significant bits). The tolerance is
    2**-6 times the largest reference magnitude: four such roundings at the largest output.
    A wrong forward (wrong expert, wrong routing weight, missing silu) lands far outside it:
    the run also reports the error of one such wrong answer (each token's two routing weights
    swapped) as "wrong_answer_err" and requires it to exceed the tolerance tenfold, so the
    tolerance is shown to tell right from wrong on this very data.

Prints one JSON object on stdout (the kernel's own chatter goes to stderr) and exits 0 only if
both hold. Runs offline, writes only an unlinked temporary file under /tmp, uses one worker pool
of two threads and takes seconds on two cores.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

EXPERTS = 8
TOP_K = 2
HIDDEN = 256
INTERMEDIATE = 512
TOKENS = 5
THREADS = 2
SEED = 20240611
METHOD = "BF16"

# Required flags per variant, best first, as kt_kernel/_cpu_detect.py lists them.
_AVX512_BF16 = ["avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi", "avx512_bf16"]
VARIANT_RULES: list[tuple[str, list[str]]] = [
    ("amx", ["amx_tile", "amx_int8", "amx_bf16", *_AVX512_BF16]),
    ("avx512_bf16", _AVX512_BF16),
    ("avx512_vbmi", ["avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi"]),
    ("avx512_vnni", ["avx512f", "avx512bw", "avx512_vnni"]),
    ("avx512_base", ["avx512f", "avx512bw"]),
    ("avx2", ["avx2"]),
]
RELEVANT_FLAGS = sorted({flag for _, flags in VARIANT_RULES for flag in flags} | {"fma"})


def host_flags() -> set[str]:
    """The first 'flags' line of /proc/cpuinfo, lower-cased."""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].lower().split())
    return set()


def has_flag(flags: set[str], flag: str) -> bool:
    """/proc/cpuinfo spells some flags without the underscore (avx512vbmi for avx512_vbmi)."""
    return flag in flags or flag.replace("_", "") in flags


def expected_variant(flags: set[str]) -> str:
    for variant, required in VARIANT_RULES:
        if all(has_flag(flags, flag) for flag in required):
            return variant
    return "avx2"


def to_bf16_values(array: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bf16 (ties to even), kept as float32."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


@contextmanager
def native_stdout_to_stderr(captured: list[str]) -> Iterator[None]:
    """Send what C++ prints on fd 1 to stderr instead, keeping a copy in `captured`.

    kt-kernel's C++ code announces the kernel it built ("backend=...") with printf; stdout must
    carry nothing but the JSON result.
    """
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(dir="/tmp") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            captured.append(text)
            sys.stderr.write(text)


def reference_moe(
    x: np.ndarray,
    ids: np.ndarray,
    weights: np.ndarray,
    gate: np.ndarray,
    up: np.ndarray,
    down: np.ndarray,
) -> np.ndarray:
    """The standard MoE forward in float64, token by token, expert by expert."""
    x64, gate64, up64, down64 = (a.astype(np.float64) for a in (x, gate, up, down))
    out = np.zeros((x.shape[0], down.shape[1]), dtype=np.float64)
    for t in range(x.shape[0]):
        for k in range(ids.shape[1]):
            e = int(ids[t, k])
            g = gate64[e] @ x64[t]
            u = up64[e] @ x64[t]
            h = g / (1.0 + np.exp(-g)) * u
            out[t] += float(weights[t, k]) * (down64[e] @ h)
    return out


def kt_kernel_moe(
    ext: Any,
    x: np.ndarray,
    ids: np.ndarray,
    weights: np.ndarray,
    gate: np.ndarray,
    up: np.ndarray,
    down: np.ndarray,
) -> tuple[np.ndarray, str, str]:
    """The same forward through kt-kernel: MOEConfig, load_weights_task, forward_task.

    Returns the output, the MoE class used and the backend the kernel announced ("" if none).
    """
    import torch

    moe_mod = ext.moe
    moe_cls = getattr(moe_mod, "AMXBF16_MOE", None) or moe_mod.AVX2BF16_MOE

    pool_config = ext.WorkerPoolConfig()
    pool_config.subpool_count = 1
    pool_config.subpool_numa_map = [0]
    pool_config.subpool_thread_count = [THREADS]
    chatter: list[str] = []

    def bf16(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(torch.bfloat16)

    gate_t, up_t, down_t = bf16(gate), bf16(up), bf16(down)
    gpu_mask = torch.zeros(EXPERTS, dtype=torch.bool)  # every expert on the CPU
    config = moe_mod.MOEConfig(EXPERTS, TOP_K, HIDDEN, INTERMEDIATE, gpu_mask.data_ptr())
    config.layer_idx = 0
    config.max_len = 64
    config.gate_projs = [[gate_t[e].data_ptr() for e in range(EXPERTS)]]
    config.up_projs = [[up_t[e].data_ptr() for e in range(EXPERTS)]]
    config.down_projs = [[down_t[e].data_ptr() for e in range(EXPERTS)]]
    config.gate_scales = [[0] * EXPERTS]
    config.up_scales = [[0] * EXPERTS]
    config.down_scales = [[0] * EXPERTS]
    identity_map = torch.arange(EXPERTS, dtype=torch.int64)
    with native_stdout_to_stderr(chatter):
        cpu_infer = ext.CPUInfer(pool_config)
        config.pool = cpu_infer.backend_
        moe = moe_cls(config)
        cpu_infer.submit(moe.load_weights_task(identity_map.data_ptr()))
        cpu_infer.sync()

    x_t = bf16(x)
    ids_t = torch.from_numpy(ids.astype(np.int64))
    weights_t = torch.from_numpy(weights.astype(np.float32))
    out_t = torch.zeros((TOKENS, HIDDEN), dtype=torch.bfloat16)
    qlen = torch.tensor([TOKENS], dtype=torch.int32)
    task = moe.forward_task(
        qlen.data_ptr(),
        TOP_K,
        ids_t.data_ptr(),
        weights_t.data_ptr(),
        x_t.data_ptr(),
        out_t.data_ptr(),
        False,
    )
    with native_stdout_to_stderr(chatter):
        cpu_infer.submit(task)
        cpu_infer.sync()
        del moe, cpu_infer  # the pool's goodbye is chatter too
    backend = re.search(r"backend=([^)\s]+)", "".join(chatter))
    output = out_t.to(torch.float32).numpy().astype(np.float64)
    return output, moe_cls.__name__, backend.group(1) if backend else ""


def main() -> int:
    flags = host_flags()
    expected = expected_variant(flags)

    from kthybrid_serve.ktkernel import import_kt_kernel

    kt_kernel = import_kt_kernel()

    variant = str(kt_kernel.__cpu_variant__)

    rng = np.random.default_rng(SEED)
    x = to_bf16_values(rng.standard_normal((TOKENS, HIDDEN), dtype=np.float32))
    gate = to_bf16_values(
        rng.standard_normal((EXPERTS, INTERMEDIATE, HIDDEN), dtype=np.float32) / HIDDEN**0.5
    )
    up = to_bf16_values(
        rng.standard_normal((EXPERTS, INTERMEDIATE, HIDDEN), dtype=np.float32) / HIDDEN**0.5
    )
    down = to_bf16_values(
        rng.standard_normal((EXPERTS, HIDDEN, INTERMEDIATE), dtype=np.float32) / INTERMEDIATE**0.5
    )
    # Router: top-k of random logits, softmax over the chosen k (as Mixtral/Qwen-MoE route).
    logits = rng.standard_normal((TOKENS, EXPERTS))
    ids = np.argsort(-logits, axis=1)[:, :TOP_K]
    chosen = np.take_along_axis(logits, ids, axis=1)
    weights = (np.exp(chosen) / np.exp(chosen).sum(axis=1, keepdims=True)).astype(np.float32)

    reference = reference_moe(x, ids, weights, gate, up, down)
    output, moe_class, kernel_backend = kt_kernel_moe(
        kt_kernel.kt_kernel_ext, x, ids, weights, gate, up, down
    )
    wrong = reference_moe(x, ids, weights[:, ::-1].copy(), gate, up, down)

    scale = float(np.abs(reference).max())
    tolerance = 2.0**-6 * scale
    max_abs_err = float(np.abs(output - reference).max())
    wrong_answer_err = float(np.abs(wrong - reference).max())
    finite = bool(np.isfinite(output).all())

    variant_ok = variant == expected
    forward_ok = finite and max_abs_err <= tolerance and wrong_answer_err > 10 * tolerance
    result = {
        "cpu_variant": variant,
        "expected_variant_from_flags": expected,
        "flags": [flag for flag in RELEVANT_FLAGS if has_flag(flags, flag)],
        "variant_override": os.environ.get("KT_KERNEL_CPU_VARIANT", ""),
        "int8_kernel": str(getattr(kt_kernel, "__int8_kernel__", "unknown")),
        "kt_kernel_version": str(getattr(kt_kernel, "__version__", "unknown")),
        "method": METHOD,
        "moe_class": moe_class,
        "kernel_backend": kernel_backend,
        "extension_file": os.path.basename(str(getattr(kt_kernel.kt_kernel_ext, "__file__", ""))),
        "tokens": TOKENS,
        "experts": EXPERTS,
        "top_k": TOP_K,
        "hidden": HIDDEN,
        "intermediate": INTERMEDIATE,
        "threads": THREADS,
        "max_abs_ref": scale,
        "max_abs_err": max_abs_err,
        "tolerance": tolerance,
        "wrong_answer_err": wrong_answer_err,
        "output_finite": finite,
        "variant_ok": variant_ok,
        "forward_ok": forward_ok,
        "ok": variant_ok and forward_ok,
    }
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
