"""MXFP4 -> bf16: E2M1 nibbles times UE8M0 group scales, on the GPU when there is one.

Every E2M1 value (0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives) has at most two significant
bits and every UE8M0 scale is a power of two, so each product is exact in bf16 (whose exponent
range is float32's): the bf16 tensors handed to kt-kernel hold exactly the checkpoint's values.

torch is imported inside the functions: the launcher package must import without it.
"""

from __future__ import annotations

from typing import Any

from kthybrid_serve.convert.checkpoint import GROUP

E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
# Values dequantized per step: bounds the scratch (an int32 index per byte, a bf16 chunk on
# the GPU) whatever the experts' size.
CHUNK_VALUES = 1 << 27


def pair_table(device: Any) -> Any:
    """int32 [256]: the bf16 bit patterns of each byte's two E2M1 values, low nibble first
    (the first of the two bf16 values in memory is the low half of the little-endian int32)."""
    import torch

    bits = torch.tensor(E2M1, dtype=torch.bfloat16).view(torch.int16).to(torch.int32) & 0xFFFF
    codes = torch.arange(256)
    return (bits[codes & 0x0F] | (bits[codes >> 4] << 16)).to(torch.int32).to(device)


def scale_values(scales: Any) -> Any:
    """bf16 2**(e - 127) of UE8M0 bytes: the exponent field e; e = 0 is bf16's subnormal
    2**-127 (bits 0x0040)."""
    import torch

    exponent = scales.view(torch.uint8).to(torch.int16)
    bits = torch.where(exponent == 0, torch.full_like(exponent, 0x0040), exponent << 7)
    return bits.view(torch.bfloat16)


def dequantize(weights: Any, scales: Any, device: Any, out: Any) -> None:
    """Fill bf16 `out` [E, rows, cols] from uint8 `weights` [E, rows, cols/2] and `scales`
    [E, rows, cols/32], a few experts at a time on `device`: each byte becomes its two bf16
    values by table lookup, then each group of 32 is multiplied by its scale in place."""
    import torch

    experts, rows, half = weights.shape
    cols = half * 2
    table = pair_table(device)
    on_cpu = torch.device(device).type == "cpu"
    step = max(1, CHUNK_VALUES // (rows * cols))
    for start in range(0, experts, step):
        stop = min(experts, start + step)
        count = stop - start
        codes = weights[start:stop].to(device, non_blocking=True).view(torch.uint8)
        factors = scale_values(scales[start:stop].to(device, non_blocking=True))
        target = (
            out[start:stop]
            if on_cpu
            else torch.empty((count, rows, cols), dtype=torch.bfloat16, device=device)
        )
        torch.index_select(
            table, 0, codes.reshape(-1).to(torch.int32), out=target.view(torch.int32).view(-1)
        )
        target.view(count, rows, cols // GROUP, GROUP).mul_(factors.unsqueeze(-1))
        if not on_cpu:
            out[start:stop].copy_(target)


def nan_scale_count(scales: Any) -> int:
    """UE8M0 byte 0xFF is NaN: a scale that no dequantization can honour."""
    import torch

    return int((scales.view(torch.uint8) == 0xFF).sum().item())
