"""Synthetic experts for the bench's worker, in each method's own weight layout.

Expert contents do not change the work a kernel does, except where a format has a fast path
for some values: MXFP4 scales are powers of two, as E8M0 scales are, and BF16 values are
finite. Every expert of every layer is copied by kt-kernel from one source expert.
"""

from __future__ import annotations

import ctypes
import mmap
import random
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kthybrid_serve.errors import WorkerError
from kthybrid_serve.model.experts import METHODS, MXFP4_GROUP

if TYPE_CHECKING:
    from kthybrid_serve.cpubench.worker import RunSpec


class Buffer:
    """Page-aligned anonymous memory with a stable address, for kt-kernel pointers."""

    def __init__(self, data: bytes) -> None:
        self.size = max(1, len(data))
        self._map = mmap.mmap(-1, self.size)
        self._map.write(data)
        self._view = (ctypes.c_char * self.size).from_buffer(self._map)
        self.address = ctypes.addressof(self._view)


def bf16_bits(rng: random.Random, count: int, low_exp: int, high_exp: int) -> bytes:
    """`count` finite bf16 values with exponents in [low_exp, high_exp], little-endian."""
    out = bytearray(2 * count)
    for i in range(count):
        bits = (rng.getrandbits(1) << 15) | (rng.randint(low_exp, high_exp) << 7)
        bits |= rng.getrandbits(7)
        out[2 * i] = bits & 0xFF
        out[2 * i + 1] = bits >> 8
    return bytes(out)


@dataclass
class SourceExpert:
    """One expert's weights in the method's layout; every expert of every layer copies it."""

    weights: Buffer
    scales: Buffer | None
    per_pool: bool  # AMX formats take per-pool (pre-split) pointers


def source_expert(spec: RunSpec, rng: random.Random) -> SourceExpert:
    hidden, inter = spec.hidden, spec.intermediate
    values = hidden * inter
    if spec.method == "MXFP4":
        # gate/up [I, H/2] and down [H, I/2] hold the same count; scales [rows, cols/32] bf16
        # powers of two (E8M0 as kt-kernel's loader hands them over), 2^-8 .. 2^-4.
        block = b"".join(struct.pack("<H", rng.randint(119, 123) << 7) for _ in range(4096))
        scales = (block * -(-2 * (values // MXFP4_GROUP) // len(block)))[
            : 2 * values // MXFP4_GROUP
        ]
        return SourceExpert(Buffer(rng.randbytes(values // 2)), Buffer(scales), False)
    if spec.method in {"AMXINT4", "AMXINT8"}:
        bits = 4 if spec.method == "AMXINT4" else 8
        scale = struct.pack("<f", 2.0**-10)
        return SourceExpert(
            Buffer(rng.randbytes(values * bits // 8)), Buffer(scale * max(hidden, inter)), True
        )
    if spec.method == "BF16":
        # A 64 KiB block of random values repeated: generating every value in Python is slow.
        block = bf16_bits(rng, 32768, 115, 122)
        repeats = -(-2 * values // len(block))
        return SourceExpert(Buffer((block * repeats)[: 2 * values]), None, False)
    raise WorkerError(f"method {spec.method!r} cannot be measured; use one of {', '.join(METHODS)}")
