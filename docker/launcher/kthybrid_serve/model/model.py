"""Read a model directory: config.json, the safetensors index and the shards' headers."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from kthybrid_serve.errors import ModelIncompleteError
from kthybrid_serve.host.hostfs import read_regular
from kthybrid_serve.model.shards import ShardHeader, TensorInfo, read_safetensors_header, read_whole

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
MAX_CONFIG_BYTES = 4 * 1024**2
MAX_INDEX_BYTES = 64 * 1024**2

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ROUTED = re.compile(r"(?:^|\.)experts\.")
_LAYER = re.compile(r"(?:^|\.)layers\.([0-9]{1,9})\.")


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
    raw = read_whole(path, limit, what)
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


def routed_format(tensors: list[TensorInfo]) -> str:
    dtypes = {t.dtype for t in tensors if t.name.endswith("weight")}
    scales = {t.dtype for t in tensors if not t.name.endswith("weight")}
    if dtypes & {"I8", "U8"} and "F8_E8M0" in scales:
        return "MXFP4"
    if "F8_E4M3" in dtypes:
        return "FP8"
    if "BF16" in dtypes:
        return "BF16"
    return "UNKNOWN"


def _config_text(config: dict[str, object], key: str, default: str) -> str:
    """A name from config.json, printable and short (it reaches messages and the plan)."""
    value = config.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str) or not value:
        return default
    return "".join(c for c in value if c.isprintable())[:100] or default


@dataclass(frozen=True)
class _Tally:
    routed: list[TensorInfo]
    routed_bytes: int
    mtp_routed: int
    mtp_other: int
    other: int


def _tally(headers: list[ShardHeader], num_layers: int) -> _Tally:
    """Bytes by kind: routed experts, the MTP layers' experts and the rest, and the rest."""
    routed: list[TensorInfo] = []
    sums = {"routed": 0, "mtp_routed": 0, "mtp_other": 0, "other": 0}
    for tensor in (t for h in headers for t in h.tensors):
        is_routed = ROUTED.search(tensor.name) is not None and "shared" not in tensor.name
        if _is_mtp(tensor.name, num_layers):
            sums["mtp_routed" if is_routed else "mtp_other"] += tensor.nbytes
        elif is_routed:
            sums["routed"] += tensor.nbytes
            routed.append(tensor)
        else:
            sums["other"] += tensor.nbytes
    return _Tally(routed, sums["routed"], sums["mtp_routed"], sums["mtp_other"], sums["other"])


def _read_config(model_dir: Path) -> dict[str, object]:
    if not model_dir.is_dir():
        raise ModelIncompleteError(
            f"model directory {model_dir} does not exist; mount the model there or set "
            "KTHYBRID_MODEL"
        )
    config_path = model_dir / "config.json"
    if not config_path.exists():
        raise ModelIncompleteError(f"model directory {model_dir} has no config.json")
    config = _load_json(config_path, MAX_CONFIG_BYTES, "config.json")
    if not isinstance(config, dict):
        raise ModelIncompleteError(f"{config_path} is not a JSON object")
    return config


def read_model(path: str) -> ModelFacts:
    """Facts of a Hugging Face style model directory, reading only JSON and headers."""
    model_dir = Path(path)
    config = _read_config(model_dir)
    num_layers = _config_int(config, "num_hidden_layers", "n_layers")
    routed = _config_int(config, "n_routed_experts", "num_experts", "num_local_experts")
    first_dense = _config_int(config, "first_k_dense_replace")
    freq = max(1, _config_int(config, "moe_layer_freq", default=1))
    # Layers first_dense, first_dense + freq, ... below num_layers (arithmetic, not a list).
    moe_layers = max(0, (num_layers - first_dense + freq - 1) // freq) if routed else 0
    quant = config.get("quantization_config")
    headers = read_headers(model_dir)
    tally = _tally(headers, num_layers)
    if routed and not tally.routed:
        raise ModelIncompleteError(
            f"config.json of {path} declares {routed} routed experts but no shard holds "
            "expert tensors; the checkpoint is incomplete or not a MoE checkpoint"
        )
    heads = _config_int(config, "num_attention_heads", default=1)
    head_dim = _config_int(config, "head_dim") or _config_int(config, "hidden_size") // heads
    return ModelFacts(
        path=str(model_dir.absolute()),
        served_name=model_dir.resolve().name or "model",
        architecture=_config_text(config, "architectures", "unknown"),
        model_type=_config_text(config, "model_type", "unknown"),
        num_layers=num_layers,
        moe_layers=moe_layers,
        routed_experts=routed,
        experts_per_token=_config_int(config, "num_experts_per_tok", "moe_k"),
        hidden_size=_config_int(config, "hidden_size"),
        moe_intermediate_size=_config_int(config, "moe_intermediate_size"),
        quantization=_config_text(quant, "quant_method", "none")
        if isinstance(quant, dict)
        else "none",
        expert_dtype=_config_text(config, "expert_dtype", ""),
        nextn_layers=_config_int(config, "num_nextn_predict_layers"),
        head_dim=head_dim,
        kv_heads=_config_int(config, "num_key_value_heads", default=1),
        kv_lora_rank=_config_int(config, "kv_lora_rank"),
        qk_rope_head_dim=_config_int(config, "qk_rope_head_dim"),
        shard_count=len(headers),
        routed_bytes=tally.routed_bytes,
        mtp_routed_bytes=tally.mtp_routed,
        mtp_other_bytes=tally.mtp_other,
        other_bytes=tally.other,
        routed_format=routed_format(tally.routed),
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
