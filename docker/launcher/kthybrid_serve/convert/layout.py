"""The AMX-INT4 layout kt-kernel 0.7.2 writes and loads, and the converter's own bookkeeping.

kt-kernel's AMXInt4_MOE, given a directory, reads (and with `save` writes) one directory per
layer and thread pool: `<dir>/_layer_{L}/_numa_{p}/`, pool p holding slice p of every expert's
intermediate dimension (`intermediate / pools` rows of gate and up, the same columns of down).
Each expert and projection is two files, named after their sizes:

    INT4_{gate|up|down}_{E}_{B}Byte_quant_.kt   packed 4-bit weights, rows x cols / 2 bytes
    INT4_{gate|up|down}_{E}_{S}Byte_scale_.kt   one float32 scale per row, rows x 4 bytes

Its tile layout needs, per pool, rows to be a multiple of 32 and columns of 128: for gate and
up rows = intermediate / pools and columns = hidden; for down the reverse. kt-kernel's writer
does not report a failed write (it prints and carries on), so the converter checks every file's
presence and size itself before a layer gets its final name.

The converter adds two files of its own, which kt-kernel ignores: `kthybrid-convert.json` at the
top (what was converted, for which pools; what a resumed run must match) and
`_layer_{L}/kthybrid-layer.json` (written last inside the staged layer: the layer is complete).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kthybrid_serve.errors import CpuTopologyError, WeightFormatError

METHOD = "AMXINT4"
FILE_PREFIX = "INT4"  # kt-kernel's GemmKernel224Int4::name()
N_STEP = 32  # rows of a tile step
K_STEP = 128  # columns of a tile step (2 x TILE_K)
MANIFEST = "kthybrid-convert.json"
LAYER_MARKER = "kthybrid-layer.json"
STAGING = ".kthybrid-partial"
FORMAT_VERSION = 1

_LAYER_DIR = re.compile(r"_layer_([0-9]+)")


@dataclass(frozen=True)
class Geometry:
    """What fixes the bytes on disk: the expert shapes and the pool count."""

    experts: int
    hidden: int
    intermediate: int
    pools: int

    @property
    def pool_intermediate(self) -> int:
        return self.intermediate // self.pools

    def files(self) -> Iterator[tuple[str, int]]:
        """(path relative to the layer directory, size in bytes) of every file of a layer."""
        rows_cols = {
            "gate": (self.pool_intermediate, self.hidden),
            "up": (self.pool_intermediate, self.hidden),
            "down": (self.hidden, self.pool_intermediate),
        }
        for pool in range(self.pools):
            for expert in range(self.experts):
                for proj, (rows, cols) in rows_cols.items():
                    quant, scale = rows * cols // 2, rows * 4
                    base = f"_numa_{pool}/{FILE_PREFIX}_{proj}_{expert}"
                    yield f"{base}_{quant}Byte_quant_.kt", quant
                    yield f"{base}_{scale}Byte_scale_.kt", scale

    @property
    def layer_bytes(self) -> int:
        return sum(size for _, size in self.files())


def check_geometry(geometry: Geometry) -> None:
    """Refuse pool counts kt-kernel's tiles cannot split the experts into."""
    g = geometry
    if g.pools < 1:
        raise CpuTopologyError(f"the pool count must be at least 1, got {g.pools}")
    if g.intermediate % g.pools or g.pool_intermediate % K_STEP:
        usable = [
            p for p in range(1, 65) if not g.intermediate % p and not (g.intermediate // p) % K_STEP
        ]
        raise CpuTopologyError(
            f"{g.pools} thread pools cannot split moe_intermediate_size {g.intermediate}: each "
            f"pool's share must be a multiple of {K_STEP} for kt-kernel's AMX-INT4 tiles; "
            f"use one of {', '.join(map(str, usable)) or 'none'} pools (--kt-threadpool-count)"
        )
    if g.hidden % K_STEP:
        raise WeightFormatError(
            f"hidden_size {g.hidden} is not a multiple of {K_STEP}: kt-kernel's AMX-INT4 tiles "
            "cannot hold these experts"
        )


@dataclass(frozen=True)
class Manifest:
    """What an output directory holds; a resumed run must ask for the same."""

    format_version: int
    method: str
    experts: int
    hidden: int
    intermediate: int
    pools: int
    source: str
    source_key_style: str
    layers: list[int]
    mtp_layers: list[int]

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.experts, self.hidden, self.intermediate, self.pools)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def read_manifest(output: Path) -> Manifest | None:
    path = output / MANIFEST
    if not path.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return Manifest(**data)
    except (OSError, ValueError, TypeError) as error:
        raise WeightFormatError(
            f"{path} is not a manifest this converter wrote ({error}); remove {output} or "
            "choose another output directory"
        ) from error


def write_atomically(path: Path, text: str) -> None:
    """Write `text` under a temporary name, flush it to disk, then rename it into place."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def layer_dirs(output: Path) -> dict[int, Path]:
    """The finished `_layer_{L}` directories of an output directory."""
    if not output.is_dir():
        return {}
    found = {}
    for entry in output.iterdir():
        match = _LAYER_DIR.fullmatch(entry.name)
        if match and entry.is_dir():
            found[int(match.group(1))] = entry
    return found


def layer_problems(layer_dir: Path, geometry: Geometry) -> list[str]:
    """Why a layer directory is not a complete layer of this geometry (empty: it is)."""
    problems = []
    if not (layer_dir / LAYER_MARKER).is_file():
        problems.append(f"no {LAYER_MARKER}")
    for relative, size in geometry.files():
        path = layer_dir / relative
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            problems.append(f"{relative} missing")
            continue
        if actual != size:
            problems.append(f"{relative} has {actual} bytes, not {size}")
        if len(problems) >= 3:
            break
    return problems
