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

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from kthybrid_serve.convert.checkpoint import (
    Checkpoint,
    SourceLayer,
    read_checkpoint,
)
from kthybrid_serve.convert.layout import (
    FORMAT_VERSION,
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
from kthybrid_serve.convert.progress import Progress
from kthybrid_serve.errors import (
    DiskSpaceError,
    HostMemoryError,
    LauncherError,
    WeightFormatError,
)
from kthybrid_serve.units import duration, gib

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


def _pick_device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise LauncherError("dequantizing on cuda was asked for but torch sees no CUDA device")
    return wanted


def convert(plan: ConversionPlan, stream: TextIO | None = None) -> ConvertResult:
    """Carry out a plan from `plan_conversion`; prints progress to `stream`."""
    from kthybrid_serve.convert.kt import Quantizer, scratch_log
    from kthybrid_serve.ktkernel import load_kt_kernel

    kt = load_kt_kernel()  # first: it refuses cleanly where kt-kernel (or torch) is missing
    import torch

    from kthybrid_serve.convert.layer import Workspace, convert_layer

    out = stream or sys.stdout
    request, geometry = plan.request, plan.geometry
    device = _pick_device(request.device)
    torch.set_num_threads(max(1, request.threads))
    output, staging = request.output, request.output / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    write_atomically(output / MANIFEST, manifest_for(plan.checkpoint, geometry).to_json())
    log = scratch_log(output)
    quantizer = Quantizer(kt, request.threads, list(request.numa_nodes), log)

    done = sum(1 for p in plan.layers if p.state == "done")
    out.write(
        f"converting {len(plan.todo)} of {len(plan.layers)} MoE layers of {request.model} to "
        f"{METHOD} in {output}: {len(request.numa_nodes)} pools, {request.threads} threads, "
        f"dequantizing on {device}, kt-kernel {kt.version} ({kt.variant}); "
        f"{size_text(plan.needed_bytes)} to write, {size_text(plan.free_bytes)} free\n"
    )
    work = Workspace.allocate(
        geometry, plan.checkpoint.dims.experts_per_token, device, quantizer, log, output
    )
    progress = Progress(len(plan.layers), done, out)
    started = time.monotonic()
    layer_seconds: dict[int, dict[str, float]] = {}
    for item in plan.layers:
        if item.state != "done":
            layer_seconds[item.layer.index] = convert_layer(work, item, progress)
    progress.finish()
    del work
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
