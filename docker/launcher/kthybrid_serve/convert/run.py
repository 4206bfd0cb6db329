"""Convert a checkpoint's MXFP4 routed experts to kt-kernel's AMX-INT4 layout, layer by layer.

Order of work, failing fast: read the checkpoint's headers (every expert of every MoE layer,
dtypes and shapes), check the pool count against kt-kernel's tiles, compare with what the
output directory already holds, check free disk space and memory, and only then load
kt-kernel and torch. Each layer is dequantized (GPU when there is one), handed to kt-kernel,
which quantizes and writes it under `<output>/.kthybrid-partial/_layer_{L}`; the converter
checks every file's size, flushes them to disk, writes the layer's marker and renames the
directory to `<output>/_layer_{L}`. A re-run skips layers that are complete and redoes the one
a previous run left half-done.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kthybrid_serve.convert.checkpoint import (
    GROUP,
    Checkpoint,
    SourceLayer,
    TensorRef,
    read_checkpoint,
)
from kthybrid_serve.convert.layout import (
    FORMAT_VERSION,
    LAYER_MARKER,
    MANIFEST,
    METHOD,
    STAGING,
    Geometry,
    Manifest,
    check_geometry,
    layer_dirs,
    layer_problems,
    read_manifest,
    write_atomically,
)
from kthybrid_serve.convert.progress import Progress, duration
from kthybrid_serve.errors import (
    DiskSpaceError,
    HostMemoryError,
    LauncherError,
    WeightFormatError,
)
from kthybrid_serve.units import gib

# What an empty output directory may hold: our own staging and manifest, and the directory
# ext4 puts at the root of a fresh volume.
IGNORED = frozenset({STAGING, MANIFEST, "lost+found"})
# Room for the manifests and the file system's own metadata, beyond the layers' bytes.
SPACE_MARGIN = 64 * 1024**2


@dataclass(frozen=True)
class ConvertRequest:
    model: Path
    output: Path
    threads: int
    numa_nodes: tuple[int, ...]  # one kt-kernel thread pool per entry
    device: str = "auto"  # auto (GPU when there is one), cuda, cpu
    memory_available: int | None = None  # bytes the conversion may use; None: not checked


@dataclass
class LayerPlan:
    layer: SourceLayer
    state: str  # "todo", "done", "redo" (incomplete finished dir), "resume" (staged leftover)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ConversionPlan:
    request: ConvertRequest
    checkpoint: Checkpoint
    geometry: Geometry
    layers: tuple[LayerPlan, ...]
    needed_bytes: int
    free_bytes: int
    memory_per_layer: int

    @property
    def todo(self) -> list[LayerPlan]:
        return [plan for plan in self.layers if plan.state != "done"]


@dataclass(frozen=True)
class ConvertResult:
    output: Path
    converted: tuple[int, ...]
    skipped: tuple[int, ...]
    seconds: float
    layer_seconds: dict[int, dict[str, float]]
    device: str
    cpu_variant: str
    kt_kernel_version: str
    bytes_written: int


def memory_per_layer(geometry: Geometry) -> int:
    """Peak host memory of one layer: our bf16 copy, kt-kernel's per-pool bf16 copy, its
    INT4 buffers and one projection of MXFP4 source (bytes)."""
    values = 3 * geometry.experts * geometry.hidden * geometry.intermediate
    return 2 * values + 2 * values + values // 2 + values // 6 + 64 * 1024**2


def size_text(size: int) -> str:
    """Bytes for a one-line message: GiB from 1 GiB up, MiB below (tiny models, small disks)."""
    return gib(size) if size >= 1024**3 else f"{size / 1024**2:.1f} MiB"


def _free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def manifest_for(checkpoint: Checkpoint, geometry: Geometry) -> Manifest:
    return Manifest(
        format_version=FORMAT_VERSION,
        method=METHOD,
        experts=geometry.experts,
        hidden=geometry.hidden,
        intermediate=geometry.intermediate,
        pools=geometry.pools,
        source=str(checkpoint.path.resolve()),
        source_key_style=checkpoint.key_style,
        layers=[layer.index for layer in checkpoint.layers if not layer.mtp],
        mtp_layers=[layer.index for layer in checkpoint.layers if layer.mtp],
    )


def _check_existing(output: Path, wanted: Manifest) -> None:
    existing = read_manifest(output)
    if existing is None:
        foreign = (
            sorted(entry.name for entry in output.iterdir() if entry.name not in IGNORED)
            if output.is_dir()
            else []
        )
        if foreign:
            raise WeightFormatError(
                f"output directory {output} already holds files this converter did not write "
                f"({', '.join(foreign[:3])}); choose an empty or new directory (--output)"
            )
        return
    mismatched = [
        f"{name} {getattr(existing, name)} (this run: {getattr(wanted, name)})"
        for name in ("format_version", "method", "experts", "hidden", "intermediate", "pools")
        if getattr(existing, name) != getattr(wanted, name)
    ]
    if mismatched:
        raise WeightFormatError(
            f"output directory {output} holds a conversion with {'; '.join(mismatched)}; "
            "remove it or choose another --output to convert for these settings"
        )


def plan_conversion(request: ConvertRequest) -> ConversionPlan:
    """Everything that can be decided from headers and the file system, before any heavy work."""
    model, output = request.model, request.output
    if not model.is_dir():
        raise LauncherError(f"model directory {model} does not exist")
    if output.resolve() == model.resolve() or model.resolve() in output.resolve().parents:
        raise WeightFormatError(
            f"output {output} is the model directory or inside it; write the converted weights "
            "to a directory of their own (e.g. <model>-AMXINT4)"
        )
    checkpoint = read_checkpoint(model)
    dims = checkpoint.dims
    geometry = Geometry(dims.experts, dims.hidden, dims.intermediate, len(request.numa_nodes))
    check_geometry(geometry)
    wanted = manifest_for(checkpoint, geometry)
    _check_existing(output, wanted)

    finished = layer_dirs(output)
    staged = layer_dirs(output / STAGING)
    plans = []
    for layer in checkpoint.layers:
        if layer.index in finished:
            problems = layer_problems(finished[layer.index], geometry)
            plans.append(LayerPlan(layer, "redo" if problems else "done", problems))
        elif layer.index in staged:
            plans.append(LayerPlan(layer, "resume"))
        else:
            plans.append(LayerPlan(layer, "todo"))
    remaining = sum(1 for plan in plans if plan.state != "done")
    needed = remaining * geometry.layer_bytes + (SPACE_MARGIN if remaining else 0)
    # What a half-done layer already holds is freed before it is written again.
    reclaim = sum(_tree_bytes(staged[p.layer.index]) for p in plans if p.state == "resume")
    reclaim += sum(_tree_bytes(finished[p.layer.index]) for p in plans if p.state == "redo")
    free = _free_bytes(output) + reclaim
    if needed > free:
        raise DiskSpaceError(
            f"not enough free space for {output}: {remaining} layers of AMX-INT4 experts "
            f"need {size_text(needed)}, the file system has {size_text(free)} free; free "
            "space or choose another --output"
        )
    per_layer = memory_per_layer(geometry)
    if remaining and request.memory_available is not None and per_layer > request.memory_available:
        raise HostMemoryError(
            f"converting one layer needs {size_text(per_layer)} of host memory (its bf16 experts "
            f"twice and their INT4 form), {size_text(request.memory_available)} is available; "
            "free memory or raise the container's limit"
        )
    return ConversionPlan(request, checkpoint, geometry, tuple(plans), needed, free, per_layer)


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _fsync_tree(path: Path) -> None:
    for directory, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_into(ref: TensorRef, target: Any) -> None:
    """Read one tensor's bytes straight into a uint8 tensor's memory."""
    view = memoryview(target.numpy()).cast("B")
    with ref.file.open("rb", buffering=0) as handle:
        handle.seek(ref.offset)
        got = 0
        while got < ref.nbytes:
            count = handle.readinto(view[got:])
            if not count:
                raise WeightFormatError(
                    f"{ref.file} ends inside {ref.key}; the download was interrupted, "
                    "fetch it again"
                )
            got += count


def _load_projection(layer: SourceLayer, proj: str, weights: Any, scales: Any) -> tuple[Any, Any]:
    """The projection's MXFP4 bytes of every expert, read into the reused flat buffers."""
    first = layer.experts[0][proj]
    experts = len(layer.experts)
    w = weights[: experts * first.weight.nbytes].view(experts, *first.weight.shape)
    s = scales[: experts * first.scale.nbytes].view(experts, *first.scale.shape)
    for expert, projections in enumerate(layer.experts):
        _read_into(projections[proj].weight, w[expert])
        _read_into(projections[proj].scale, s[expert])
    return w, s


def _rows_cols(proj: str, geometry: Geometry) -> tuple[int, int]:
    """kt-kernel's bf16 input shapes: gate and up [intermediate, hidden], down the reverse."""
    if proj == "down":
        return geometry.hidden, geometry.intermediate
    return geometry.intermediate, geometry.hidden


def _pick_device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise LauncherError("dequantizing on cuda was asked for but torch sees no CUDA device")
    return wanted


def convert(plan: ConversionPlan, stream: TextIO | None = None) -> ConvertResult:
    """Carry out a plan from `plan_conversion`; prints progress to `stream`."""
    from kthybrid_serve.convert.kt import Quantizer, log_tail, scratch_log
    from kthybrid_serve.ktkernel import load_kt_kernel

    kt = load_kt_kernel()  # first: it refuses cleanly where kt-kernel (or torch) is missing
    import torch

    from kthybrid_serve.convert.dequant import dequantize, nan_scale_count

    out = stream or sys.stdout
    request, geometry = plan.request, plan.geometry
    device = _pick_device(request.device)
    torch.set_num_threads(max(1, request.threads))
    output, staging = request.output, request.output / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    write_atomically(output / MANIFEST, manifest_for(plan.checkpoint, geometry).to_json())
    log = scratch_log(output)
    quantizer = Quantizer(kt, request.threads, list(request.numa_nodes), log)
    dims = plan.checkpoint.dims

    done = sum(1 for p in plan.layers if p.state == "done")
    out.write(
        f"converting {len(plan.todo)} of {len(plan.layers)} MoE layers of {request.model} to "
        f"{METHOD} in {output}: {len(request.numa_nodes)} pools, {request.threads} threads, "
        f"dequantizing on {device}, kt-kernel {kt.version} ({kt.variant}); "
        f"{size_text(plan.needed_bytes)} to write, {size_text(plan.free_bytes)} free\n"
    )
    # Buffers reused by every layer (all have the same shapes): the MXFP4 bytes of one
    # projection (pinned, for fast copies to the GPU) and the bf16 experts kt-kernel reads.
    values = geometry.experts * geometry.hidden * geometry.intermediate
    pin = device == "cuda"
    source_weights = torch.empty(values // 2, dtype=torch.uint8, pin_memory=pin)
    source_scales = torch.empty(values // GROUP, dtype=torch.uint8, pin_memory=pin)
    bf16 = {
        proj: torch.empty((geometry.experts, *_rows_cols(proj, geometry)), dtype=torch.bfloat16)
        for proj in ("gate", "up", "down")
    }
    progress = Progress(len(plan.layers), done, out)
    started = time.monotonic()
    layer_seconds: dict[int, dict[str, float]] = {}
    for item in plan.layers:
        layer = item.layer
        final = output / f"_layer_{layer.index}"
        staged = staging / f"_layer_{layer.index}"
        if item.state == "done":
            continue
        if item.state == "resume":
            progress.note(f"{layer.name}: a previous run left it half-done; converting it again")
        if item.state == "redo":
            progress.note(
                f"{layer.name}: {final} is incomplete ({'; '.join(item.problems)}); "
                "converting it again"
            )
            shutil.rmtree(final)
        if staged.exists():
            shutil.rmtree(staged)
        progress.working(layer.name)
        times: dict[str, float] = {}
        t0 = time.monotonic()
        for proj in ("gate", "up", "down"):
            t = time.monotonic()
            weights, scales = _load_projection(layer, proj, source_weights, source_scales)
            times["read"] = times.get("read", 0.0) + time.monotonic() - t
            bad = nan_scale_count(scales)
            if bad:
                raise WeightFormatError(
                    f"{layer.name} {proj}: {bad} MXFP4 scales are 0xFF (NaN); the checkpoint is "
                    "corrupt, download it again"
                )
            t = time.monotonic()
            dequantize(weights, scales, device, bf16[proj])
            if device == "cuda":
                torch.cuda.synchronize()
            times["dequant"] = times.get("dequant", 0.0) + time.monotonic() - t
            del weights, scales
        t = time.monotonic()
        try:
            quantizer.quantize_layer(
                root=staging,
                layer=layer.index,
                experts_per_token=dims.experts_per_token,
                gate=bf16["gate"],
                up=bf16["up"],
                down=bf16["down"],
            )
        except RuntimeError as error:
            raise LauncherError(
                f"kt-kernel could not quantize {layer.name}: {error}; "
                f"its log says: {log_tail(log) or 'nothing'}"
            ) from error
        times["quantize_write"] = time.monotonic() - t
        t = time.monotonic()
        problems = [p for p in layer_problems(staged, geometry) if LAYER_MARKER not in p]
        if problems:
            raise LauncherError(
                f"kt-kernel wrote {layer.name} incompletely ({'; '.join(problems)}); is "
                f"{output} full or read-only? kt-kernel said: {log_tail(log) or 'nothing'}"
            )
        _fsync_tree(staged)
        write_atomically(
            staged / LAYER_MARKER,
            json.dumps(
                {
                    "layer": layer.index,
                    "name": layer.name,
                    "mtp": layer.mtp,
                    "bytes": geometry.layer_bytes,
                    "seconds": round(time.monotonic() - t0, 3),
                }
            )
            + "\n",
        )
        staged.rename(final)
        _fsync_dir(output)
        times["verify_sync"] = time.monotonic() - t
        times["total"] = time.monotonic() - t0
        layer_seconds[layer.index] = times
        progress.layer_done(layer.name, times["total"])
    progress.finish()
    del bf16, source_weights, source_scales
    shutil.rmtree(staging, ignore_errors=True)
    log.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    converted = tuple(layer_seconds)
    out.write(
        f"done: {len(converted)} layers converted in {duration(seconds)}, "
        f"{done} were already complete; serve with KTHYBRID_KT_WEIGHT_PATH={output} "
        f"KTHYBRID_KT_METHOD={METHOD} KTHYBRID_KT_THREADPOOL_COUNT={geometry.pools}\n"
    )
    out.flush()
    return ConvertResult(
        output=output,
        converted=converted,
        skipped=tuple(p.layer.index for p in plan.layers if p.state == "done"),
        seconds=seconds,
        layer_seconds=layer_seconds,
        device=device,
        cpu_variant=kt.variant,
        kt_kernel_version=kt.version,
        bytes_written=len(converted) * geometry.layer_bytes,
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
