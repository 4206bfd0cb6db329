"""Read a model directory (config.json, safetensors index and headers) and the CPU weights."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from kthybrid_serve.errors import ModelIncompleteError, WeightFormatError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
# Headers are JSON and rarely above a few MB; a bigger value means a corrupt file.
MAX_HEADER_BYTES = 256 * 1024**2

_ROUTED = re.compile(r"(?:^|\.)experts\.")
_LAYER = re.compile(r"(?:^|\.)layers\.([0-9]+)\.")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class ShardHeader:
    file: str
    tensors: tuple[TensorInfo, ...]
    required_size: int  # 8 + header + data, what a complete file measures


@dataclass(frozen=True)
class CpuWeights:
    """The weights KT-Kernel reads for the CPU experts (`--kt-weight-path`)."""

    path: str
    format: str  # MXFP4, AMXINT4, AMXINT8, BF16, FP8
    routed_bytes: int
    numa_count: int | None  # converted AMX weights are split per NUMA node at conversion
    same_as_model: bool


@dataclass(frozen=True)
class ModelFacts:
    path: str
    served_name: str
    architecture: str
    model_type: str
    num_layers: int
    moe_layers: int
    routed_experts: int
    experts_per_token: int
    hidden_size: int
    moe_intermediate_size: int
    quantization: str
    expert_dtype: str
    nextn_layers: int
    head_dim: int
    kv_heads: int
    kv_lora_rank: int
    qk_rope_head_dim: int
    shard_count: int
    routed_bytes: int  # routed experts of the main layers
    mtp_routed_bytes: int  # routed experts of the MTP (NextN) layers
    mtp_other_bytes: int  # everything else of the MTP layers
    other_bytes: int  # non-expert weights of the main model (GPU resident)
    routed_format: str

    @property
    def bytes_per_expert(self) -> int:
        """One routed expert of one layer, in the checkpoint's format."""
        if self.moe_layers == 0 or self.routed_experts == 0:
            return 0
        return self.routed_bytes // (self.moe_layers * self.routed_experts)


def read_safetensors_header(path: Path) -> ShardHeader:
    """Only the header of a .safetensors file: 8-byte little-endian length, then JSON."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(8)
            if len(raw) != 8:
                raise ModelIncompleteError(f"{path} is truncated (no safetensors header)")
            (length,) = struct.unpack("<Q", raw)
            if length > MAX_HEADER_BYTES:
                raise ModelIncompleteError(f"{path} has a corrupt safetensors header")
            header_bytes = handle.read(length)
    except OSError as error:
        raise ModelIncompleteError(f"cannot read {path}: {error.strerror}") from error
    if len(header_bytes) != length:
        raise ModelIncompleteError(f"{path} is truncated inside its safetensors header")
    try:
        header = json.loads(header_bytes)
    except json.JSONDecodeError as error:
        raise ModelIncompleteError(f"{path} has a corrupt safetensors header") from error
    tensors = []
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, stop = entry["data_offsets"]
        end = max(end, int(stop))
        tensors.append(
            TensorInfo(
                name=name,
                dtype=str(entry["dtype"]),
                shape=tuple(int(d) for d in entry["shape"]),
                nbytes=int(stop) - int(start),
            )
        )
    return ShardHeader(file=path.name, tensors=tuple(tensors), required_size=8 + length + end)


def _config_int(config: dict[str, object], *names: str, default: int = 0) -> int:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


def _shard_files(model_dir: Path) -> list[str]:
    index = model_dir / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ModelIncompleteError(
                f"{index} is not a valid safetensors index (no weight_map); download it again"
            ) from error
        return sorted(set(weight_map.values()))
    if (model_dir / SINGLE_NAME).is_file():
        return [SINGLE_NAME]
    raise ModelIncompleteError(
        f"{model_dir} has neither {INDEX_NAME} nor {SINGLE_NAME}; "
        "download the complete checkpoint into it"
    )


def read_headers(model_dir: Path) -> list[ShardHeader]:
    """Headers of every shard; refuses with the names of missing or short shards."""
    files = _shard_files(model_dir)
    missing = [name for name in files if not (model_dir / name).is_file()]
    if missing:
        shown = ", ".join(missing[:5])
        if len(missing) > 5:
            shown += f" and {len(missing) - 5} more"
        raise ModelIncompleteError(
            f"model directory {model_dir} is incomplete: {len(missing)} of {len(files)} shards "
            f"missing ({shown}); finish the download (e.g. `hf download ... --local-dir "
            f"{model_dir}`)"
        )
    headers = [read_safetensors_header(model_dir / name) for name in files]
    short = [h.file for h in headers if (model_dir / h.file).stat().st_size < h.required_size]
    if short:
        raise ModelIncompleteError(
            f"model directory {model_dir} is incomplete: shards shorter than their headers say "
            f"({', '.join(short[:5])}); the download was interrupted, fetch them again"
        )
    return headers


def _is_mtp(name: str, num_layers: int) -> bool:
    if name.startswith("mtp.") or ".mtp." in name:
        return True
    match = _LAYER.search(name)
    # DeepSeek-V3 style checkpoints store the NextN layer as layers.<num_hidden_layers>.
    return match is not None and int(match.group(1)) >= num_layers


def _routed_format(tensors: list[TensorInfo]) -> str:
    dtypes = {t.dtype for t in tensors if t.name.endswith("weight")}
    scales = {t.dtype for t in tensors if not t.name.endswith("weight")}
    if dtypes & {"I8", "U8"} and "F8_E8M0" in scales:
        return "MXFP4"
    if "F8_E4M3" in dtypes:
        return "FP8"
    if "BF16" in dtypes:
        return "BF16"
    return "UNKNOWN"


def read_model(path: str) -> ModelFacts:
    """Facts of a Hugging Face style model directory, reading only JSON and headers."""
    model_dir = Path(path)
    if not model_dir.is_dir():
        raise ModelIncompleteError(
            f"model directory {path} does not exist; mount the model there or set KTHYBRID_MODEL"
        )
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelIncompleteError(f"model directory {path} has no config.json")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ModelIncompleteError(f"{config_path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ModelIncompleteError(f"{config_path} is not a JSON object")
    num_layers = _config_int(config, "num_hidden_layers", "n_layers")
    routed = _config_int(config, "n_routed_experts", "num_experts", "num_local_experts")
    first_dense = _config_int(config, "first_k_dense_replace")
    freq = max(1, _config_int(config, "moe_layer_freq", default=1))
    moe_layers = len([i for i in range(first_dense, num_layers) if (i - first_dense) % freq == 0])
    if routed == 0:
        moe_layers = 0
    quant = config.get("quantization_config")
    quant_method = str(quant.get("quant_method", "none")) if isinstance(quant, dict) else "none"
    architectures = config.get("architectures")
    architecture = (
        str(architectures[0]) if isinstance(architectures, list) and architectures else "unknown"
    )

    headers = read_headers(model_dir)
    routed_tensors: list[TensorInfo] = []
    routed_bytes = mtp_routed = mtp_other = other = 0
    for header in headers:
        for tensor in header.tensors:
            is_routed = _ROUTED.search(tensor.name) is not None and "shared" not in tensor.name
            if _is_mtp(tensor.name, num_layers):
                if is_routed:
                    mtp_routed += tensor.nbytes
                else:
                    mtp_other += tensor.nbytes
            elif is_routed:
                routed_bytes += tensor.nbytes
                routed_tensors.append(tensor)
            else:
                other += tensor.nbytes
    if routed and not routed_tensors:
        raise ModelIncompleteError(
            f"config.json of {path} declares {routed} routed experts but no shard holds "
            "expert tensors; the checkpoint is incomplete or not a MoE checkpoint"
        )
    head_dim = _config_int(config, "head_dim")
    if not head_dim:
        heads = _config_int(config, "num_attention_heads", default=1)
        head_dim = _config_int(config, "hidden_size") // max(1, heads)
    return ModelFacts(
        path=str(model_dir.absolute()),
        served_name=model_dir.resolve().name or "model",
        architecture=architecture,
        model_type=str(config.get("model_type", "unknown")),
        num_layers=num_layers,
        moe_layers=moe_layers,
        routed_experts=routed,
        experts_per_token=_config_int(config, "num_experts_per_tok", "moe_k"),
        hidden_size=_config_int(config, "hidden_size"),
        moe_intermediate_size=_config_int(config, "moe_intermediate_size"),
        quantization=quant_method,
        expert_dtype=str(config.get("expert_dtype", "")),
        nextn_layers=_config_int(config, "num_nextn_predict_layers"),
        head_dim=head_dim,
        kv_heads=_config_int(config, "num_key_value_heads", default=1),
        kv_lora_rank=_config_int(config, "kv_lora_rank"),
        qk_rope_head_dim=_config_int(config, "qk_rope_head_dim"),
        shard_count=len(headers),
        routed_bytes=routed_bytes,
        mtp_routed_bytes=mtp_routed,
        mtp_other_bytes=mtp_other,
        other_bytes=other,
        routed_format=_routed_format(routed_tensors),
    )


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
    layer_dirs = sorted(p for p in weight_dir.iterdir() if re.fullmatch(r"_layer_[0-9]+", p.name))
    if layer_dirs:
        numa_dirs = [p for p in layer_dirs[0].iterdir() if re.fullmatch(r"_numa_[0-9]+", p.name)]
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
    numa_ids = [int(m.group(1)) for t in tensors if (m := re.search(r"\.numa\.([0-9]+)\.", t.name))]
    routed = [t for t in tensors if _ROUTED.search(t.name) or "_exps." in t.name]
    size = sum(t.nbytes for t in routed)
    if numa_ids:
        method = "AMXINT8" if "int8" in weight_dir.name.lower() else "AMXINT4"
        return CpuWeights(path, method, size, max(numa_ids) + 1, False)
    return CpuWeights(path, _routed_format(routed), size, None, False)
