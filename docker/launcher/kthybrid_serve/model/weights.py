"""The CPU expert weights (`--kt-weight-path`): the checkpoint's own, or converted AMX ones."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kthybrid_serve.errors import WeightFormatError
from kthybrid_serve.model.model import ROUTED, ModelFacts, routed_format
from kthybrid_serve.model.shards import read_safetensors_header


@dataclass(frozen=True)
class CpuWeights:
    """The weights KT-Kernel reads for the CPU experts (`--kt-weight-path`)."""

    path: str
    format: str  # MXFP4, AMXINT4, AMXINT8, BF16, FP8
    routed_bytes: int
    numa_count: int | None  # converted AMX weights are split per NUMA node at conversion
    same_as_model: bool


def read_cpu_weights(path: str, model: ModelFacts) -> CpuWeights:
    """Recognise the CPU expert weights: the checkpoint's own, or converted AMX ones."""
    weight_dir = Path(path)
    same = weight_dir.resolve() == Path(model.path).resolve()
    path = str(weight_dir.absolute())
    if same:
        return CpuWeights(path, model.routed_format, model.routed_bytes, None, True)
    if not weight_dir.is_dir():
        raise WeightFormatError(
            f"--kt-weight-path {path} does not exist; point it at the checkpoint (MXFP4) "
            "or at converted AMXINT4 weights (`kthybrid-serve convert`)"
        )
    layer_dirs = sorted(
        p for p in weight_dir.iterdir() if re.fullmatch(r"_layer_[0-9]{1,6}", p.name)
    )
    if layer_dirs:
        numa_dirs = [
            p for p in layer_dirs[0].iterdir() if re.fullmatch(r"_numa_[0-9]{1,4}", p.name)
        ]
        files = [f for layer in layer_dirs for f in layer.rglob("*") if f.is_file()]
        int8 = any(f.name.upper().startswith("INT8") for f in files[:64])
        size = sum(f.stat().st_size for f in files)
        if len(layer_dirs) < model.moe_layers:
            raise WeightFormatError(
                f"converted weights in {path} cover {len(layer_dirs)} of {model.moe_layers} MoE "
                "layers; the conversion did not finish, run `kthybrid-serve convert` again"
            )
        return CpuWeights(path, "AMXINT8" if int8 else "AMXINT4", size, len(numa_dirs), False)
    shards = sorted(weight_dir.glob("*.safetensors"))
    if not shards:
        raise WeightFormatError(
            f"--kt-weight-path {path} holds no _layer_* directories and no .safetensors files"
        )
    tensors = [t for s in shards for t in read_safetensors_header(s).tensors]
    numa_ids = [
        int(m.group(1)) for t in tensors if (m := re.search(r"\.numa\.([0-9]{1,4})\.", t.name))
    ]
    routed = [t for t in tensors if ROUTED.search(t.name) or "_exps." in t.name]
    size = sum(t.nbytes for t in routed)
    if numa_ids:
        method = "AMXINT8" if "int8" in weight_dir.name.lower() else "AMXINT4"
        return CpuWeights(path, method, size, max(numa_ids) + 1, False)
    return CpuWeights(path, routed_format(routed), size, None, False)
