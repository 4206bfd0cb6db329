"""MoE forwards computed by kt-kernel from converted AMX-INT4 weights, against float64 references.

Usage: verify_amxint4.py CHECKPOINT CONVERTED [--threads N]
CHECKPOINT is a directory written by mxfp4_checkpoint.py, CONVERTED what `kthybrid-serve
convert` made of it. For every converted layer, kt-kernel (AMXInt4_MOE, loading the layer from
CONVERTED with the pool count its manifest records) computes two forwards, 4 tokens (its
vector path) and 32 tokens (its matrix path, AMX tiles on an AMX CPU), each token routed to
top-k experts with softmax weights:

    out[t] = sum_k w[t, k] * down_e(silu(gate_e(x_t)) * up_e(x_t)),  e = ids[t, k]

and they are compared with:

(1) the float64 reference from the checkpoint's MXFP4 experts, decoded on the test side
    (mxfp4_checkpoint.decode_mxfp4, numpy, independent of the converter's torch code).
    AMX-INT4 keeps one scale per row and 15 levels (-7..7), so it differs from MXFP4 by far
    more than rounding: the tolerance is what that format costs on this very data, measured in
    float64 (`int4_model_err`: the forward with every weight row quantized the way kt-kernel's
    BufferBInt4Impl::from_mat does: scale = amax/112 in float32, int8 = round(w/scale), then
    rounded to a multiple of 16; each thread pool quantizes its own slice, so down's rows are
    split into one block of columns per pool), plus 2**-4 of the largest output for what the
    model leaves out: int8 activations (about 2% here) and bf16 rounding. A wrong conversion
    misses it: the run computes, on the same tokens, the outputs of gate and up swapped, the
    nibbles of each byte decoded high-first, every expert shifted by one, and the routing
    weights reversed, and requires each to exceed the tolerance.
(2) that INT4 model itself: `err_vs_int4_model` must stay within 2**-4 of the largest output,
    and every wrong answer above must miss the model by more than that: the files hold the
    weights kt-kernel's own quantizer makes of the checkpoint's experts, expert by expert.

Prints one JSON object on stdout (kt-kernel's chatter goes to stderr) and exits 0 only if every
layer passes. Needs numpy, torch and kt_kernel.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.mxfp4_checkpoint import expert_values, spec_of

SEED = 7
TOKEN_COUNTS = (4, 32)
MAX_LEN = 32
SLACK = 2.0**-4


@contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
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
            sys.stderr.write(sink.read().decode(errors="replace"))


def int4_model(weights: np.ndarray, column_blocks: int = 1) -> np.ndarray:
    """kt-kernel's per-row AMX-INT4 quantization of float weights [..., rows, cols], as float64,
    each block of columns (one per thread pool) with its own scales."""
    if column_blocks > 1:
        blocks = np.split(weights, column_blocks, axis=-1)
        return np.concatenate([int4_model(block) for block in blocks], axis=-1)
    w = weights.astype(np.float32)
    scale = (np.abs(w).max(axis=-1, keepdims=True) / np.float32(112.0)).astype(np.float32)
    inverse = np.where(scale > 0, np.float32(1.0) / np.where(scale > 0, scale, 1), 0)
    as_int8 = np.clip(np.rint(w * inverse.astype(np.float32)), -128, 127).astype(np.int32)
    level = np.sign(as_int8) * ((np.abs(as_int8) + 8) & 0xF0)
    return level.astype(np.float64) * scale.astype(np.float64)


def reference(x: np.ndarray, ids: np.ndarray, weights: np.ndarray, w: dict[str, Any]) -> Any:
    out = np.zeros((x.shape[0], w["down"].shape[1]))
    for t in range(x.shape[0]):
        for k in range(ids.shape[1]):
            e = int(ids[t, k])
            g = w["gate"][e] @ x[t]
            u = w["up"][e] @ x[t]
            out[t] += float(weights[t, k]) * (w["down"][e] @ (g / (1.0 + np.exp(-g)) * u))
    return out


class KtLayer:
    """One converted layer loaded by kt-kernel's AMXInt4_MOE from the converted directory."""

    def __init__(self, kt: Any, cpu_infer: Any, converted: Path, layer: int, dims: Any) -> None:
        import torch

        self.torch = torch
        ext = kt.kt_kernel_ext
        self.mask = torch.zeros(dims.experts, dtype=torch.bool)
        self.identity = torch.arange(dims.experts, dtype=torch.int64)
        config = ext.moe.MOEConfig(
            dims.experts, dims.top_k, dims.hidden, dims.intermediate, self.mask.data_ptr()
        )
        config.layer_idx = layer
        config.pool = cpu_infer.backend_
        config.max_len = MAX_LEN
        config.load = True
        config.save = False
        config.path = str(converted)
        self.cpu_infer = cpu_infer
        self.hidden = dims.hidden
        with native_stdout_to_stderr():
            self.moe = ext.moe.AMXInt4_MOE(config)
            cpu_infer.submit(self.moe.load_weights_task(self.identity.data_ptr()))
            cpu_infer.sync()

    def forward(self, x: np.ndarray, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        torch = self.torch
        tokens, top_k = ids.shape
        x_t = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
        ids_t = torch.from_numpy(ids.astype(np.int64))
        w_t = torch.from_numpy(weights.astype(np.float32))
        out = torch.zeros((tokens, self.hidden), dtype=torch.bfloat16)
        qlen = torch.tensor([tokens], dtype=torch.int32)
        task = self.moe.forward_task(
            qlen.data_ptr(), top_k, ids_t.data_ptr(), w_t.data_ptr(), x_t.data_ptr(),
            out.data_ptr(), False,
        )  # fmt: skip
        with native_stdout_to_stderr():
            self.cpu_infer.submit(task)
            self.cpu_infer.sync()
        result: np.ndarray = out.to(torch.float32).numpy().astype(np.float64)
        return result


def bf16_values(array: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def check_layer(
    layer_kt: KtLayer, checkpoint: Path, layer: int, dims: Any, pools: int
) -> dict[str, Any]:
    rng = np.random.default_rng(SEED + layer)
    exact = expert_values(checkpoint, layer)
    model = {
        proj: int4_model(values, pools if proj == "down" else 1) for proj, values in exact.items()
    }
    wrong_nibbles = expert_values(checkpoint, layer, swap_nibbles=True)
    swapped = {"gate": exact["up"], "up": exact["gate"], "down": exact["down"]}
    shifted = {proj: np.roll(values, 1, axis=0) for proj, values in exact.items()}
    runs = []
    for tokens in TOKEN_COUNTS:
        x = bf16_values(rng.standard_normal((tokens, dims.hidden)))
        logits = rng.standard_normal((tokens, dims.experts))
        ids = np.argsort(-logits, axis=1)[:, : dims.top_k]
        chosen = np.take_along_axis(logits, ids, axis=1)
        weights = (np.exp(chosen) / np.exp(chosen).sum(axis=1, keepdims=True)).astype(np.float32)
        ref = reference(x, ids, weights, exact)
        ref_model = reference(x, ids, weights, model)
        out = layer_kt.forward(x, ids, weights)
        scale = float(np.abs(ref).max())
        model_err = float(np.abs(ref_model - ref).max())
        tolerance = model_err + SLACK * scale
        wrong = {
            "gate_up_swapped": reference(x, ids, weights, swapped),
            "nibbles_high_first": reference(x, ids, weights, wrong_nibbles),
            "experts_shifted_by_one": reference(x, ids, weights, shifted),
            "routing_weights_reversed": reference(x, ids, weights[:, ::-1].copy(), exact),
        }
        wrong_errs = {name: float(np.abs(value - ref).max()) for name, value in wrong.items()}
        wrong_vs_model = {
            name: float(np.abs(value - ref_model).max()) for name, value in wrong.items()
        }
        err = float(np.abs(out - ref).max())
        err_model = float(np.abs(out - ref_model).max())
        finite = bool(np.isfinite(out).all())
        runs.append(
            {
                "tokens": tokens,
                "max_abs_ref": scale,
                "max_abs_err": err,
                "int4_model_err": model_err,
                "tolerance": tolerance,
                "err_vs_int4_model": err_model,
                "int4_model_tolerance": SLACK * scale,
                "wrong_answer_errs": wrong_errs,
                "wrong_answer_errs_vs_int4_model": wrong_vs_model,
                "output_finite": finite,
                "ok": finite
                and err <= tolerance
                and err_model <= SLACK * scale
                and min(wrong_errs.values()) > tolerance
                and min(wrong_vs_model.values()) > SLACK * scale,
            }
        )
    return {"layer": layer, "runs": runs, "ok": all(run["ok"] for run in runs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("converted", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from kthybrid_serve.ktkernel import import_kt_kernel

    kt_kernel = import_kt_kernel()

    manifest = json.loads((args.converted / "kthybrid-convert.json").read_text())
    spec = spec_of(args.checkpoint)
    pools = int(manifest["pools"])
    ext = kt_kernel.kt_kernel_ext
    pool_config = ext.WorkerPoolConfig()
    pool_config.subpool_count = pools
    pool_config.subpool_numa_map = [0] * pools
    pool_config.subpool_thread_count = [
        args.threads // pools + (1 if i < args.threads % pools else 0) for i in range(pools)
    ]
    with native_stdout_to_stderr():
        cpu_infer = ext.CPUInfer(pool_config)
    layers = []
    for layer in manifest["layers"] + manifest["mtp_layers"]:
        loaded = KtLayer(kt_kernel, cpu_infer, args.converted, layer, spec)
        layers.append(check_layer(loaded, args.checkpoint, layer, spec, pools))
        del loaded
    with native_stdout_to_stderr():
        del cpu_infer
    runs = [run for layer in layers for run in layer["runs"]]
    worst = max(runs, key=lambda run: run["max_abs_err"] / run["tolerance"])
    margin = min(min(run["wrong_answer_errs"].values()) / run["tolerance"] for run in runs)
    result = {
        "cpu_variant": str(kt_kernel.__cpu_variant__),
        "kt_kernel_version": str(getattr(kt_kernel, "__version__", "unknown")),
        "method": "AMXINT4",
        "moe_class": "AMXInt4_MOE",
        "pools": pools,
        "threads": args.threads,
        "experts": spec.experts,
        "top_k": spec.top_k,
        "hidden": spec.hidden,
        "intermediate": spec.intermediate,
        "key_style": spec.style,
        "layers_checked": [layer["layer"] for layer in layers],
        "max_abs_err": worst["max_abs_err"],
        "tolerance": worst["tolerance"],
        "max_abs_ref": worst["max_abs_ref"],
        "worst_err_over_tolerance": worst["max_abs_err"] / worst["tolerance"],
        "max_err_vs_int4_model_over_ref": max(
            run["err_vs_int4_model"] / run["max_abs_ref"] for run in runs
        ),
        "min_wrong_answer_err_over_tolerance": margin,
        "per_layer": layers,
        "ok": all(layer["ok"] for layer in layers),
    }
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
