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
# Experts dequantized per step: bounds the float32 scratch on the device.
CHUNK_VALUES = 1 << 27


def pair_table(device: Any) -> Any:
    """float32 [256, 2]: the two E2M1 values of each byte, low nibble first."""
    import torch

    values = torch.tensor(E2M1, dtype=torch.float32)
    codes = torch.arange(256)
    return torch.stack((values[codes & 0x0F], values[codes >> 4]), dim=1).to(device)


def scale_values(scales: Any) -> Any:
    """float32 2**(e - 127) of UE8M0 bytes, exact (e = 0 is float32's subnormal 2**-127)."""
    import torch

    exponent = scales.view(torch.uint8).to(torch.int32)
    bits = torch.where(exponent == 0, torch.full_like(exponent, 0x00400000), exponent << 23)
    return bits.view(torch.float32)


def dequantize(weights: Any, scales: Any, device: Any, out: Any) -> None:
    """Fill bf16 `out` [E, rows, cols] from uint8 `weights` [E, rows, cols/2] and `scales`
    [E, rows, cols/32], a few experts at a time on `device`."""
    import torch

    experts, rows, half = weights.shape
    cols = half * 2
    table = pair_table(device)
    step = max(1, CHUNK_VALUES // (rows * cols))
    for start in range(0, experts, step):
        stop = min(experts, start + step)
        w = weights[start:stop].to(device, non_blocking=True).view(torch.uint8)
        s = scale_values(scales[start:stop].to(device, non_blocking=True))
        values = table[w.to(torch.int64)].view(stop - start, rows, cols // GROUP, GROUP)
        values.mul_(s.unsqueeze(-1))
        out[start:stop].copy_(values.view(stop - start, rows, cols).to(torch.bfloat16))


def nan_scale_count(scales: Any) -> int:
    """UE8M0 byte 0xFF is NaN: a scale that no dequantization can honour."""
    import torch

    return int((scales.view(torch.uint8) == 0xFF).sum().item())
