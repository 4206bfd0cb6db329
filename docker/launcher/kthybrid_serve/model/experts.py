"""The routed experts as a model's config gives them: shape, bytes per expert, ceilings.

Facts written once and used by the plan (CPU expert memory, the tuned decode ceiling) and
by the CPU bench (working-set sizing, GB/s of expert weights streamed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kthybrid_serve.errors import WorkerError
from kthybrid_serve.model.model import ModelFacts
from kthybrid_serve.model.weights import CpuWeights

METHODS = ("MXFP4", "AMXINT4", "AMXINT8", "BF16")  # the methods whose kernel format is known
MXFP4_GROUP = 32


@dataclass(frozen=True)
class ExpertShape:
    """The routed experts of one model: what a decode step reads."""

    model: str
    hidden: int
    intermediate: int
    top_k: int
    experts: int  # routed experts per MoE layer
    moe_layers: int

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hidden": self.hidden,
            "intermediate": self.intermediate,
            "top_k": self.top_k,
            "experts": self.experts,
            "moe_layers": self.moe_layers,
        }


def expert_shape(model: ModelFacts) -> ExpertShape:
    """The routed experts' shape as the model's config and headers give it."""
    return ExpertShape(
        model=model.served_name,
        hidden=model.hidden_size,
        intermediate=model.moe_intermediate_size,
        top_k=model.experts_per_token,
        experts=model.routed_experts,
        moe_layers=model.moe_layers,
    )


def bytes_per_expert(method: str, hidden: int, intermediate: int) -> int:
    """Bytes one expert (gate, up, down) occupies in the method's kernel format.

    This is what decoding one token reads per active expert: MXFP4 is 4-bit E2M1 values plus
    one E8M0 exponent byte per 32 (the checkpoint's own size); AMXINT4/AMXINT8 are 4/8-bit
    values plus one float32 scale per output row (kt-kernel's BufferBInt4/Int8 layout); BF16
    is two bytes per value.
    """
    values = 3 * hidden * intermediate
    rows = 2 * intermediate + hidden
    if method == "MXFP4":
        return values // 2 + values // MXFP4_GROUP
    if method == "AMXINT4":
        return values // 2 + 4 * rows
    if method == "AMXINT8":
        return values + 4 * rows
    if method == "BF16":
        return 2 * values
    raise WorkerError(f"method {method!r} cannot be measured; use one of {', '.join(METHODS)}")


def decode_ceiling(
    gbps: float, shape: ExpertShape, method: str, gpu_experts_per_layer: float = 0.0
) -> float:
    """Tokens/s the CPU side allows: bytes of active experts per token on the CPU / GB/s.

    With routing spread evenly, a token's top-k experts fall on the CPU in proportion to the
    experts the CPU holds; the GPU's share costs the CPU nothing.
    """
    cpu_share = max(0.0, 1.0 - gpu_experts_per_layer / shape.experts) if shape.experts else 0.0
    per_token = (
        shape.moe_layers
        * shape.top_k
        * cpu_share
        * bytes_per_expert(method, shape.hidden, shape.intermediate)
    )
    return math.inf if per_token == 0 else gbps * 1e9 / per_token


def cpu_expert_bytes(weights: CpuWeights, on_cpu: bool) -> int:
    """Routed experts KT-Kernel keeps in host memory, GPU-resident ones included.

    Dynamic expert updates can swap any expert onto the GPU, so kt-kernel holds
    them all. The MTP draft's experts are not here: sglang-kt builds the draft with
    KT offload switched off, so they live on the GPU.
    """
    return weights.routed_bytes if on_cpu else 0
