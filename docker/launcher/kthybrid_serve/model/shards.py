"""Safetensors shards, header only: the tensor names, dtypes, shapes and sizes, checked."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

from kthybrid_serve.errors import ModelIncompleteError
from kthybrid_serve.host.hostfs import read_regular
from kthybrid_serve.untrusted import parse_json, printable

# Headers are JSON and rarely above a few MB; a bigger value means a corrupt file.
MAX_HEADER_BYTES = 100 * 1024**2
# Tensors in one shard: real ones hold a few thousand. Counted before the JSON is parsed, so a
# header of a million entries is refused in milliseconds, not after 30 s and 1 GB of parsing.
MAX_TENSORS_PER_SHARD = 131_072
# Bits per element of every safetensors dtype (the safetensors crate's Dtype); others are refused.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    end: int = 0  # where its data ends in the shard's data region

    @property
    def start(self) -> int:
        return self.end - self.nbytes


@dataclass(frozen=True)
class ShardHeader:
    file: str
    tensors: tuple[TensorInfo, ...]
    required_size: int  # 8 + header + data, what a complete file measures


def read_whole(path: Path, limit: int, what: str, offset: int = 0, part: bool = False) -> bytes:
    """A model file's bytes (the whole file, or with `part` a prefix), checked to be regular."""
    try:
        raw = read_regular(path, limit, offset, part)
    except ValueError as error:
        raise ModelIncompleteError(f"{path} {error}; the {what} must be a regular file") from None
    if raw is None:
        raise ModelIncompleteError(f"{path} does not exist; the {what} is missing")
    return raw


def _tensor_info(path: Path, name: str, entry: object) -> TensorInfo:
    """One header entry, checked: dtype, shape of naturals, two ordered non-negative offsets."""
    bad = f"{path} has a corrupt safetensors header (tensor {name[:80]!r})"
    if not isinstance(entry, dict):
        raise ModelIncompleteError(f"{bad}: entry is not an object")
    offsets, shape, dtype = entry.get("data_offsets"), entry.get("shape"), entry.get("dtype")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_natural(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise ModelIncompleteError(f"{bad}: data_offsets must be two ordered whole numbers >= 0")
    if not isinstance(shape, list) or not all(_natural(d) for d in shape) or len(shape) > 8:
        raise ModelIncompleteError(f"{bad}: shape must be a list of whole numbers >= 0")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        shown = printable(dtype, 40) if isinstance(dtype, str) else type(dtype).__name__
        raise ModelIncompleteError(
            f"{bad}: dtype {shown} is not a safetensors dtype ({', '.join(DTYPE_BITS)})"
        )
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        raise ModelIncompleteError(
            f"{bad}: data_offsets {offsets[0]}-{offsets[1]} hold {offsets[1] - offsets[0]} bytes "
            f"but shape {list(shape)} of {dtype} needs {bits / 8:g}"
        )
    return TensorInfo(name, dtype, tuple(shape), offsets[1] - offsets[0], offsets[1])


def _check_layout(path: Path, tensors: list[TensorInfo]) -> None:
    """Tensors lie one after another in the data region: none overlaps another."""
    previous: TensorInfo | None = None
    for tensor in sorted(tensors, key=lambda t: (t.start, t.end)):
        if previous is not None and tensor.start < previous.end:
            raise ModelIncompleteError(
                f"{path} has a corrupt safetensors header: tensors "
                f"{printable(previous.name, 80)!r} and {printable(tensor.name, 80)!r} overlap"
            )
        previous = tensor


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62


def read_safetensors_header(path: Path) -> ShardHeader:
    """Only the header of a .safetensors file: 8-byte little-endian length, then JSON."""
    raw = read_whole(path, 8, "safetensors shard", part=True)
    if len(raw) != 8:
        raise ModelIncompleteError(f"{path} is truncated (no safetensors header)")
    (length,) = struct.unpack("<Q", raw)
    if length > MAX_HEADER_BYTES:
        raise ModelIncompleteError(f"{path} has a corrupt safetensors header (length {length})")
    header_bytes = read_whole(path, length, "safetensors shard", offset=8, part=True)
    if len(header_bytes) != length:
        raise ModelIncompleteError(f"{path} is truncated inside its safetensors header")
    if header_bytes.count(b'"data_offsets"') > MAX_TENSORS_PER_SHARD:
        raise ModelIncompleteError(
            f"{path} has a corrupt safetensors header (more than {MAX_TENSORS_PER_SHARD} "
            "tensors in one shard)"
        )
    header = parse_json(
        header_bytes, f"{path}'s safetensors header", ModelIncompleteError, "download it again"
    )
    if not isinstance(header, dict):
        raise ModelIncompleteError(f"{path} has a corrupt safetensors header (not an object)")
    if len(header) > MAX_TENSORS_PER_SHARD + 1:
        raise ModelIncompleteError(
            f"{path} has a corrupt safetensors header (more than {MAX_TENSORS_PER_SHARD} "
            "tensors in one shard)"
        )
    tensors = [_tensor_info(path, str(k), v) for k, v in header.items() if k != "__metadata__"]
    _check_layout(path, tensors)
    end = max((t.end for t in tensors), default=0)
    return ShardHeader(file=path.name, tensors=tuple(tensors), required_size=8 + length + end)
