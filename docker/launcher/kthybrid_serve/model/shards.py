"""Safetensors shards, header only: the tensor names, dtypes, shapes and sizes, checked."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from kthybrid_serve.errors import ModelIncompleteError
from kthybrid_serve.host.hostfs import read_regular

# Headers are JSON and rarely above a few MB; a bigger value means a corrupt file.
MAX_HEADER_BYTES = 100 * 1024**2


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    end: int = 0  # where its data ends in the shard's data region


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
    if not isinstance(dtype, str) or not re.fullmatch(r"[A-Z0-9_]{1,16}", dtype):
        raise ModelIncompleteError(f"{bad}: dtype must be a name such as BF16")
    return TensorInfo(name, dtype, tuple(shape), offsets[1] - offsets[0], offsets[1])


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
    try:
        header = json.loads(header_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ModelIncompleteError(f"{path} has a corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise ModelIncompleteError(f"{path} has a corrupt safetensors header (not an object)")
    tensors = [_tensor_info(path, str(k), v) for k, v in header.items() if k != "__metadata__"]
    end = max((t.end for t in tensors), default=0)
    return ShardHeader(file=path.name, tensors=tuple(tensors), required_size=8 + length + end)
