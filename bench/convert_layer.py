"""Time `kthybrid-serve convert` on MoE layers of DeepSeek-V4-Flash's shape, and extrapolate.

Writes a two-layer V4-format checkpoint of MXFP4 experts (256 experts, hidden 4096,
intermediate 2048 a layer: uniform random codes and scales, the real format and size, 3.4 GB a
layer), then converts it with the project's converter (kthybrid_serve.convert) on every allowed
core, in one thread pool per --pools, dequantizing on the GPU when torch sees one (and, with
--also-cpu, once more on the CPU). Reports each phase per layer (read, dequantize, kt-kernel's
quantize + write, size check + fsync) and the whole model's time: the first layer (which also
touches the converter's reused buffers) plus the second layer's time for each other layer of
V4-Flash's 43 MoE layers + 1 MTP layer. The source is read from the page cache (it was just
written); a cold read of 149 GB from disk adds its own time. Then kt-kernel loads a converted
layer and runs a forward (it loads; the output is finite).

    python bench/convert_layer.py --workdir /tmp/bench   # needs torch and kt_kernel
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from kthybrid_serve.convert import ConvertRequest, convert, plan_conversion

from tests.support.mxfp4_checkpoint import Spec, write_checkpoint

REPO = Path(__file__).resolve().parent.parent

V4_FLASH_MOE_LAYERS = 43
V4_FLASH_MTP_LAYERS = 1


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def load_and_forward(converted: Path, spec: Spec, threads: int, pools: int) -> dict[str, Any]:
    import numpy as np
    import torch
    from kthybrid_serve.ktkernel import import_kt_kernel

    ext = import_kt_kernel().kt_kernel_ext
    config = ext.WorkerPoolConfig()
    config.subpool_count = pools
    config.subpool_numa_map = [0] * pools
    config.subpool_thread_count = [threads // pools] * pools
    cpu_infer = ext.CPUInfer(config)
    mask = torch.zeros(spec.experts, dtype=torch.bool)
    identity = torch.arange(spec.experts, dtype=torch.int64)
    moe_config = ext.moe.MOEConfig(
        spec.experts, spec.top_k, spec.hidden, spec.intermediate, mask.data_ptr()
    )
    moe_config.layer_idx = 0
    moe_config.pool = cpu_infer.backend_
    moe_config.max_len = 32
    moe_config.load = True
    moe_config.path = str(converted)
    started = time.monotonic()
    moe = ext.moe.AMXInt4_MOE(moe_config)
    cpu_infer.submit(moe.load_weights_task(identity.data_ptr()))
    cpu_infer.sync()
    load_seconds = time.monotonic() - started
    rng = np.random.default_rng(0)
    tokens = 4
    x = torch.from_numpy(rng.standard_normal((tokens, spec.hidden), dtype=np.float32))
    x = x.to(torch.bfloat16)
    order = np.argsort(rng.random((tokens, spec.experts)), axis=1)[:, : spec.top_k]
    ids = torch.from_numpy(np.ascontiguousarray(order, dtype=np.int64))
    weights = torch.full((tokens, spec.top_k), 1.0 / spec.top_k, dtype=torch.float32)
    out = torch.zeros((tokens, spec.hidden), dtype=torch.bfloat16)
    qlen = torch.tensor([tokens], dtype=torch.int32)
    cpu_infer.submit(
        moe.forward_task(
            qlen.data_ptr(), spec.top_k, ids.data_ptr(), weights.data_ptr(), x.data_ptr(),
            out.data_ptr(), False,
        )
    )  # fmt: skip
    cpu_infer.sync()
    finite = bool(torch.isfinite(out.float()).all())
    del moe, cpu_infer
    return {"load_seconds": round(load_seconds, 3), "forward_output_finite": finite}


def run_once(model: Path, output: Path, threads: int, pools: int, device: str) -> dict[str, Any]:
    shutil.rmtree(output, ignore_errors=True)
    request = ConvertRequest(model, output, threads, (0,) * pools, device=device)
    started = time.monotonic()
    plan = plan_conversion(request)
    result = convert(plan, sys.stderr)
    wall = time.monotonic() - started
    layers = [result.layer_seconds[index] for index in sorted(result.layer_seconds)]
    first, steady = layers[0]["total"], layers[-1]["total"]
    total_layers = V4_FLASH_MOE_LAYERS + V4_FLASH_MTP_LAYERS
    # The first layer also pays for touching the reused buffers' pages and kt-kernel's start.
    extrapolated = first + steady * (total_layers - 1)
    return {
        "device": result.device,
        "cpu_variant": result.cpu_variant,
        "first_layer_seconds": round(first, 3),
        "layer_seconds": round(steady, 3),
        "phases_seconds": [
            {name: round(value, 3) for name, value in phases.items()} for phases in layers
        ],
        "wall_seconds_with_planning": round(wall, 3),
        "bytes_written": result.bytes_written,
        "v4_flash_layers": total_layers,
        "v4_flash_extrapolated_seconds": round(extrapolated, 1),
        "v4_flash_extrapolated_minutes": round(extrapolated / 60, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--experts", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--pools", type=int, default=1)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--also-cpu", action="store_true", help="convert again, on the CPU")
    parser.add_argument(
        "--output", type=Path, default=REPO / "bench" / "results" / "convert-layer.json"
    )
    args = parser.parse_args()
    spec = Spec(
        layers=2,
        mtp=0,
        experts=args.experts,
        hidden=args.hidden,
        intermediate=args.intermediate,
        top_k=6,
        shards=2,
        random_codes=True,
    )
    started = time.monotonic()
    model = write_checkpoint(args.workdir / "v4-one-layer", spec)
    generate = time.monotonic() - started
    runs = [run_once(model, args.workdir / "converted", args.threads, args.pools, "auto")]
    loaded = load_and_forward(args.workdir / "converted", spec, args.threads, args.pools)
    if args.also_cpu:
        runs.append(
            run_once(model, args.workdir / "converted-cpu", args.threads, args.pools, "cpu")
        )
    gpu = ""
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    except ImportError:
        pass
    result = {
        "what": "MoE layers of DeepSeek-V4-Flash's shape, MXFP4 -> AMX-INT4",
        "layers_converted": spec.layers,
        "experts": spec.experts,
        "hidden": spec.hidden,
        "intermediate": spec.intermediate,
        "pools": args.pools,
        "threads": args.threads,
        "cpu": cpu_model(),
        "gpu": gpu,
        "source_bytes": sum(f.stat().st_size for f in model.glob("*.safetensors")),
        "checkpoint_write_seconds": round(generate, 1),
        "runs": runs,
        "converted_layer_load": loaded,
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
