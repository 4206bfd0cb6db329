"""One MoE layer converted: MXFP4 read, dequantized to bf16, quantized and written by kt-kernel.

Each layer is written under the staging directory, checked, synced, marked complete and only
then renamed into place, so an interrupted run leaves whole layers and one staged layer.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kthybrid_serve.convert.checkpoint import GROUP, SourceLayer, TensorRef
from kthybrid_serve.convert.dequant import dequantize, nan_scale_count
from kthybrid_serve.convert.kt import Quantizer, log_tail
from kthybrid_serve.convert.layout import (
    LAYER_MARKER,
    STAGING,
    Geometry,
    layer_problems,
    write_atomically,
)
from kthybrid_serve.convert.progress import Progress
from kthybrid_serve.errors import LauncherError, WeightFormatError

if TYPE_CHECKING:
    from kthybrid_serve.convert.run import LayerPlan

PROJECTIONS = ("gate", "up", "down")


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Workspace:
    """What every layer's conversion shares: kt-kernel's quantizer and the reused buffers.

    Buffers are reused by every layer (all have the same shapes): the MXFP4 bytes of one
    projection (pinned, for fast copies to the GPU) and the bf16 experts kt-kernel reads.
    """

    geometry: Geometry
    experts_per_token: int
    device: str
    quantizer: Quantizer
    log: Path
    output: Path
    source_weights: Any
    source_scales: Any
    bf16: dict[str, Any]

    @classmethod
    def allocate(
        cls,
        geometry: Geometry,
        experts_per_token: int,
        device: str,
        quantizer: Quantizer,
        log: Path,
        output: Path,
    ) -> Workspace:
        import torch

        values = geometry.experts * geometry.hidden * geometry.intermediate
        pin = device == "cuda"
        bf16 = {
            proj: torch.empty((geometry.experts, *_rows_cols(proj, geometry)), dtype=torch.bfloat16)
            for proj in PROJECTIONS
        }
        return cls(
            geometry,
            experts_per_token,
            device,
            quantizer,
            log,
            output,
            torch.empty(values // 2, dtype=torch.uint8, pin_memory=pin),
            torch.empty(values // GROUP, dtype=torch.uint8, pin_memory=pin),
            bf16,
        )


def _dequantize_layer(work: Workspace, layer: SourceLayer, times: dict[str, float]) -> None:
    """The layer's MXFP4 experts into the workspace's bf16 buffers, projection by projection."""
    import torch

    for proj in PROJECTIONS:
        t = time.monotonic()
        weights, scales = _load_projection(layer, proj, work.source_weights, work.source_scales)
        times["read"] = times.get("read", 0.0) + time.monotonic() - t
        bad = nan_scale_count(scales)
        if bad:
            raise WeightFormatError(
                f"{layer.name} {proj}: {bad} MXFP4 scales are 0xFF (NaN); the checkpoint is "
                "corrupt, download it again"
            )
        t = time.monotonic()
        dequantize(weights, scales, work.device, work.bf16[proj])
        if work.device == "cuda":
            torch.cuda.synchronize()
        times["dequant"] = times.get("dequant", 0.0) + time.monotonic() - t
        del weights, scales


def _commit(work: Workspace, layer: SourceLayer, staged: Path, final: Path, t0: float) -> None:
    """Check the staged layer, sync it, mark it complete and move it into place."""
    output, log = work.output, work.log
    problems = [p for p in layer_problems(staged, work.geometry) if LAYER_MARKER not in p]
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
                "bytes": work.geometry.layer_bytes,
                "seconds": round(time.monotonic() - t0, 3),
            }
        )
        + "\n",
    )
    staged.rename(final)
    _fsync_dir(output)


def convert_layer(work: Workspace, item: LayerPlan, progress: Progress) -> dict[str, float]:
    """Convert one planned layer (state "todo", "resume" or "redo"); its timings in seconds."""
    layer = item.layer
    staging = work.output / STAGING
    final = work.output / f"_layer_{layer.index}"
    staged = staging / f"_layer_{layer.index}"
    if item.state == "resume":
        progress.note(f"{layer.name}: a previous run left it half-done; converting it again")
    if item.state == "redo":
        progress.note(
            f"{layer.name}: {final} is incomplete ({'; '.join(item.problems)}); converting it again"
        )
        shutil.rmtree(final)
    if staged.exists():
        shutil.rmtree(staged)
    progress.working(layer.name)
    times: dict[str, float] = {}
    t0 = time.monotonic()
    _dequantize_layer(work, layer, times)
    t = time.monotonic()
    try:
        work.quantizer.quantize_layer(
            root=staging,
            layer=layer.index,
            experts_per_token=work.experts_per_token,
            gate=work.bf16["gate"],
            up=work.bf16["up"],
            down=work.bf16["down"],
        )
    except RuntimeError as error:
        raise LauncherError(
            f"kt-kernel could not quantize {layer.name}: {error}; "
            f"its log says: {log_tail(work.log) or 'nothing'}"
        ) from error
    times["quantize_write"] = time.monotonic() - t
    t = time.monotonic()
    _commit(work, layer, staged, final, t0)
    times["verify_sync"] = time.monotonic() - t
    times["total"] = time.monotonic() - t0
    progress.layer_done(layer.name, times["total"])
    return times
