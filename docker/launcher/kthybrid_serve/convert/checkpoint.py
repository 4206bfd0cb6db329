"""The MXFP4 routed experts of a checkpoint: where each tensor lies, read from headers only.

Two key styles exist for the same data (DeepSeek-V4-Flash's own and the Hugging Face style
sglang remaps it to):

- V4:  `layers.{L}.ffn.experts.{E}.{w1,w2,w3}.{weight,scale}` and the MTP layers as
  `mtp.{i}.ffn.experts.{E}...`;
- HF:  `model.layers.{L}.mlp.experts.{E}.{gate,up,down}_proj.{weight,weight_scale_inv}`, the MTP
  layer being `model.layers.{num_hidden_layers + i}`.

w1 is the gate projection, w3 the up projection and w2 the down projection. Each weight is
[rows, cols / 2] bytes of E2M1 pairs (low nibble first) with one UE8M0 scale per 32 values,
[rows, cols / 32]. kt-kernel numbers MoE layers by the model's layer index, and an MTP layer
i by num_hidden_layers + i (sglang's NextN convention), so that is the index used here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kthybrid_serve.errors import ModelIncompleteError, WeightFormatError
from kthybrid_serve.model.model import read_headers

GROUP = 32  # MXFP4: one UE8M0 scale per 32 E2M1 values
PROJECTIONS = ("gate", "up", "down")
WEIGHT_DTYPES = frozenset({"I8", "U8"})
SCALE_DTYPES = frozenset({"F8_E8M0", "U8"})

_V4 = re.compile(
    r"^(?P<kind>layers|mtp)\.(?P<layer>[0-9]+)\.ffn\.experts\.(?P<expert>[0-9]+)\."
    r"(?P<proj>w1|w2|w3)\.(?P<part>weight|scale)$"
)
_HF = re.compile(
    r"^model\.(?:language_model\.)?layers\.(?P<layer>[0-9]+)\.mlp\.experts\.(?P<expert>[0-9]+)\."
    r"(?P<proj>gate_proj|up_proj|down_proj)\.(?P<part>weight|weight_scale_inv)$"
)
_PROJ = {
    "w1": "gate", "w3": "up", "w2": "down",
    "gate_proj": "gate", "up_proj": "up", "down_proj": "down",
}  # fmt: skip


@dataclass(frozen=True)
class TensorRef:
    """One tensor's bytes inside a shard: absolute offset and length."""

    key: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class ExpertProjection:
    weight: TensorRef
    scale: TensorRef


@dataclass(frozen=True)
class SourceLayer:
    """The routed experts of one MoE layer, as kt-kernel will number it."""

    index: int
    name: str  # the checkpoint's prefix, e.g. "layers.3" or "mtp.0"
    mtp: bool
    experts: tuple[dict[str, ExpertProjection], ...]  # expert id -> projection -> tensors

    @property
    def source_bytes(self) -> int:
        return sum(
            p.weight.nbytes + p.scale.nbytes for expert in self.experts for p in expert.values()
        )


@dataclass(frozen=True)
class Dimensions:
    experts: int
    experts_per_token: int
    hidden: int
    intermediate: int
    num_layers: int


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    dims: Dimensions
    key_style: str  # "v4" or "hf"
    layers: tuple[SourceLayer, ...]

    @property
    def source_bytes(self) -> int:
        return sum(layer.source_bytes for layer in self.layers)


def _int(config: dict[str, object], *names: str) -> int:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    raise ModelIncompleteError(f"config.json has no positive {' / '.join(names)}")


def read_dimensions(model_dir: Path) -> Dimensions:
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ModelIncompleteError(f"model directory {model_dir} has no config.json") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelIncompleteError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ModelIncompleteError(f"{path} is not a JSON object")
    text = config.get("text_config")
    if isinstance(text, dict):
        config = {**config, **text}
    return Dimensions(
        experts=_int(config, "n_routed_experts", "num_experts", "num_local_experts"),
        experts_per_token=_int(config, "num_experts_per_tok", "moe_k"),
        hidden=_int(config, "hidden_size"),
        intermediate=_int(config, "moe_intermediate_size", "intermediate_size"),
        num_layers=_int(config, "num_hidden_layers", "n_layers"),
    )


def _classify(key: str, num_layers: int) -> tuple[str, int, str, bool, int, str, str] | None:
    """(style, layer index, prefix, mtp, expert, projection, part) of a routed-expert key."""
    match = _V4.match(key)
    if match:
        layer = int(match["layer"])
        mtp = match["kind"] == "mtp"
        index = num_layers + layer if mtp else layer
        part = "weight" if match["part"] == "weight" else "scale"
        prefix = f"{match['kind']}.{layer}"
        return "v4", index, prefix, mtp, int(match["expert"]), _PROJ[match["proj"]], part
    match = _HF.match(key)
    if match:
        layer = int(match["layer"])
        part = "weight" if match["part"] == "weight" else "scale"
        prefix = key.split(".mlp.", 1)[0]
        proj = _PROJ[match["proj"]]
        return "hf", layer, prefix, layer >= num_layers, int(match["expert"]), proj, part
    return None


def _expected_shape(proj: str, part: str, dims: Dimensions) -> tuple[int, int]:
    rows, cols = (
        (dims.hidden, dims.intermediate) if proj == "down" else (dims.intermediate, dims.hidden)
    )
    return (rows, cols // 2) if part == "weight" else (rows, cols // GROUP)


def _shards(model_dir: Path) -> Iterable[tuple[Path, int, dict[str, object]]]:
    """(file, data start, header entries) of every shard, after the completeness check."""
    for header in read_headers(model_dir):
        path = model_dir / header.file
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            entries = json.loads(handle.read(length))
        yield path, 8 + length, entries


def read_checkpoint(model_dir: Path) -> Checkpoint:
    """Every MXFP4 routed expert of the checkpoint, checked for completeness, dtype and shape."""
    dims = read_dimensions(model_dir)
    for name, value in (("hidden_size", dims.hidden), ("moe_intermediate_size", dims.intermediate)):
        if value % GROUP:
            raise WeightFormatError(
                f"{name} {value} is not a multiple of {GROUP}, the MXFP4 group; "
                "this is not an MXFP4 checkpoint the converter can read"
            )
    found: dict[int, dict[int, dict[str, dict[str, TensorRef]]]] = {}
    prefixes: dict[int, tuple[str, bool]] = {}
    styles: set[str] = set()
    for path, data_start, entries in _shards(model_dir):
        for key, entry in entries.items():
            if key == "__metadata__" or not isinstance(entry, dict):
                continue
            parsed = _classify(key, dims.num_layers)
            if parsed is None:
                continue
            style, index, prefix, mtp, expert, proj, part = parsed
            styles.add(style)
            if prefixes.setdefault(index, (prefix, mtp)) != (prefix, mtp):
                raise WeightFormatError(
                    f"MoE layer {index} appears as both {prefixes[index][0]} and {prefix} in "
                    f"{model_dir}; the checkpoint mixes key styles, download it again"
                )
            start, stop = (int(x) for x in entry["data_offsets"])
            ref = TensorRef(
                key=key,
                file=path,
                dtype=str(entry["dtype"]),
                shape=tuple(int(d) for d in entry["shape"]),
                offset=data_start + start,
                nbytes=stop - start,
            )
            slot = found.setdefault(index, {}).setdefault(expert, {}).setdefault(proj, {})
            if part in slot:
                raise WeightFormatError(f"{key} is stored twice in {model_dir}")
            slot[part] = ref
    if not found:
        raise WeightFormatError(
            f"{model_dir} holds no routed experts in either key style "
            "(layers.L.ffn.experts.E.w1.weight or model.layers.L.mlp.experts.E.gate_proj.weight)"
        )
    if len(styles) > 1:
        raise WeightFormatError(
            f"{model_dir} mixes V4 (layers.L.ffn.experts) and Hugging Face "
            "(model.layers.L.mlp.experts) expert keys; download the checkpoint again"
        )
    layers = [
        _check_layer(index, prefixes[index], experts, dims)
        for index, experts in sorted(found.items())
    ]
    return Checkpoint(model_dir, dims, styles.pop(), tuple(layers))


def _check_layer(
    index: int,
    prefix: tuple[str, bool],
    experts: dict[int, dict[str, dict[str, TensorRef]]],
    dims: Dimensions,
) -> SourceLayer:
    name, mtp = prefix
    missing = [
        f"expert {expert} {proj} {part}"
        for expert in range(dims.experts)
        for proj in PROJECTIONS
        for part in ("weight", "scale")
        if part not in experts.get(expert, {}).get(proj, {})
    ]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise ModelIncompleteError(
            f"MoE layer {name} lacks {len(missing)} expert tensors ({shown}); "
            "the checkpoint is incomplete, download it again"
        )
    extra = sorted(set(experts) - set(range(dims.experts)))
    if extra:
        raise WeightFormatError(
            f"MoE layer {name} has expert {extra[0]} but config.json declares "
            f"{dims.experts} routed experts"
        )
    result: list[dict[str, ExpertProjection]] = []
    for expert in range(dims.experts):
        projections: dict[str, ExpertProjection] = {}
        for proj in PROJECTIONS:
            weight, scale = experts[expert][proj]["weight"], experts[expert][proj]["scale"]
            _check_tensor(weight, WEIGHT_DTYPES, _expected_shape(proj, "weight", dims))
            _check_tensor(scale, SCALE_DTYPES, _expected_shape(proj, "scale", dims))
            projections[proj] = ExpertProjection(weight, scale)
        result.append(projections)
    return SourceLayer(index=index, name=name, mtp=mtp, experts=tuple(result))


def _check_tensor(ref: TensorRef, dtypes: frozenset[str], shape: tuple[int, int]) -> None:
    if ref.dtype not in dtypes:
        raise WeightFormatError(
            f"{ref.key} is {ref.dtype}, not MXFP4 ({' or '.join(sorted(dtypes))}); the converter "
            "reads MXFP4 routed experts only"
        )
    if ref.shape != shape or ref.nbytes != shape[0] * shape[1]:
        raise WeightFormatError(
            f"{ref.key} has shape {list(ref.shape)} ({ref.nbytes} bytes) where config.json "
            f"implies {list(shape)}; the checkpoint and its config.json do not match"
        )
