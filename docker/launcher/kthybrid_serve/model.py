"""Read a model directory (config.json, safetensors index and headers) and the CPU weights."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from kthybrid_serve.errors import ModelIncompleteError, WeightFormatError
from kthybrid_serve.hostfs import read_regular

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
# Headers are JSON and rarely above a few MB; a bigger value means a corrupt file.
MAX_HEADER_BYTES = 100 * 1024**2
MAX_CONFIG_BYTES = 4 * 1024**2
MAX_INDEX_BYTES = 64 * 1024**2

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ROUTED = re.compile(r"(?:^|\.)experts\.")
_LAYER = re.compile(r"(?:^|\.)layers\.([0-9]{1,9})\.")


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
    revision: str | None = None  # the commit `hf download` recorded, when it did

    @property
    def bytes_per_expert(self) -> int:
        """One routed expert of one layer, in the checkpoint's format."""
        if self.moe_layers == 0 or self.routed_experts == 0:
            return 0
        return self.routed_bytes // (self.moe_layers * self.routed_experts)


def _read(path: Path, limit: int, what: str, offset: int = 0, part: bool = False) -> bytes:
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
    raw = _read(path, 8, "safetensors shard", part=True)
    if len(raw) != 8:
        raise ModelIncompleteError(f"{path} is truncated (no safetensors header)")
    (length,) = struct.unpack("<Q", raw)
    if length > MAX_HEADER_BYTES:
        raise ModelIncompleteError(f"{path} has a corrupt safetensors header (length {length})")
    header_bytes = _read(path, length, "safetensors shard", offset=8, part=True)
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


# Each config field the plan reads, with the range a real checkpoint can have.
CONFIG_RANGES: dict[str, tuple[int, int]] = {
    "num_hidden_layers": (1, 4096),
    "n_layers": (1, 4096),
    "n_routed_experts": (0, 65536),
    "num_experts": (0, 65536),
    "num_local_experts": (0, 65536),
    "first_k_dense_replace": (0, 4096),
    "moe_layer_freq": (1, 4096),
    "num_experts_per_tok": (0, 65536),
    "moe_k": (0, 65536),
    "hidden_size": (1, 1 << 20),
    "moe_intermediate_size": (0, 1 << 20),
    "num_nextn_predict_layers": (0, 64),
    "head_dim": (0, 1 << 16),
    "num_attention_heads": (1, 1 << 16),
    "num_key_value_heads": (1, 1 << 16),
    "kv_lora_rank": (0, 1 << 16),
    "qk_rope_head_dim": (0, 1 << 16),
}


def _config_int(config: dict[str, object], *names: str, default: int = 0) -> int:
    for name in names:
        value = config.get(name)
        if value is None:
            continue
        low, high = CONFIG_RANGES[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ModelIncompleteError(
                f"config.json: {name}={str(value)[:40]} is not a whole number from {low} to "
                f"{high}; the config is corrupt or not a model's"
            )
        return value
    return default


def _load_json(path: Path, limit: int, what: str) -> object:
    raw = _read(path, limit, what)
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ModelIncompleteError(f"{path} is not UTF-8 text; download it again") from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise ModelIncompleteError(f"{path} is not valid JSON ({error}); download it again") from (
            None
        )


def _shard_name(model_dir: Path, value: object, index: Path) -> str:
    """A weight_map entry: a file name that stays inside the model directory."""
    if not isinstance(value, str) or not value or _CONTROL.search(value):
        raise ModelIncompleteError(f"{index}: weight_map values must be shard file names")
    if value.startswith("/") or ".." in Path(value).parts:
        raise ModelIncompleteError(
            f"{index}: shard {value[:80]!r} points outside the model directory; "
            "the index is corrupt or hostile"
        )
    return value


def _shard_files(model_dir: Path) -> list[str]:
    index = model_dir / INDEX_NAME
    if index.exists():
        loaded = _load_json(index, MAX_INDEX_BYTES, "safetensors index")
        weight_map = loaded.get("weight_map") if isinstance(loaded, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelIncompleteError(
                f"{index} is not a valid safetensors index (no weight_map object); download it "
                "again"
            )
        return sorted({_shard_name(model_dir, v, index) for v in weight_map.values()})
    if (model_dir / SINGLE_NAME).exists():
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
    if not config_path.exists():
        raise ModelIncompleteError(f"model directory {path} has no config.json")
    config = _load_json(config_path, MAX_CONFIG_BYTES, "config.json")
    if not isinstance(config, dict):
        raise ModelIncompleteError(f"{config_path} is not a JSON object")
    num_layers = _config_int(config, "num_hidden_layers", "n_layers")
    routed = _config_int(config, "n_routed_experts", "num_experts", "num_local_experts")
    first_dense = _config_int(config, "first_k_dense_replace")
    freq = max(1, _config_int(config, "moe_layer_freq", default=1))
    # Layers first_dense, first_dense + freq, ... below num_layers (arithmetic, not a list).
    moe_layers = max(0, (num_layers - first_dense + freq - 1) // freq)
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
        revision=read_revision(model_dir),
    )


def read_revision(model_dir: Path) -> str | None:
    """The commit `hf download --local-dir` recorded for the files (None when not recorded).

    huggingface_hub keeps `.cache/huggingface/download/<file>.metadata` beside a local-dir
    download: the commit hash on the first line. Mixed commits are reported as such.
    """
    meta_dir = model_dir / ".cache" / "huggingface" / "download"
    if not meta_dir.is_dir():
        return None
    commits: set[str] = set()
    for meta in sorted(meta_dir.glob("*.metadata"))[:4096]:
        try:
            raw = read_regular(meta, 4096)
        except ValueError:
            continue
        first = (raw or b"").split(b"\n", 1)[0].decode("ascii", errors="replace").strip()
        if re.fullmatch(r"[0-9a-f]{40}", first):
            commits.add(first)
    if not commits:
        return None
    return commits.pop() if len(commits) == 1 else "mixed: " + ", ".join(sorted(commits)[:3])


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
    routed = [t for t in tensors if _ROUTED.search(t.name) or "_exps." in t.name]
    size = sum(t.nbytes for t in routed)
    if numa_ids:
        method = "AMXINT8" if "int8" in weight_dir.name.lower() else "AMXINT4"
        return CpuWeights(path, method, size, max(numa_ids) + 1, False)
    return CpuWeights(path, _routed_format(routed), size, None, False)
