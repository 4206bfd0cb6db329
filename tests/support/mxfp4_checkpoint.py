"""A small DeepSeek-V4-format checkpoint with real MXFP4 routed experts, and their float64 values.

The experts are what V4-Flash stores: for each MoE layer and expert, w1 (gate) and w3 (up) as
[intermediate, hidden / 2] bytes and w2 (down) as [hidden, intermediate / 2] bytes, two E2M1
values per byte (low nibble first), each with a UE8M0 scale per 32 values ([rows, cols / 32],
F8_E8M0). The MTP layer is stored as `mtp.0.*`. With `style="hf"` the same data carries the
Hugging Face names sglang remaps V4 to (`model.layers.L.mlp.experts.E.gate_proj.weight`,
`.weight_scale_inv`; the MTP layer as `model.layers.<num_hidden_layers>`).

The data is made the way an MXFP4 checkpoint is made: Gaussian weights (standard deviation
1/sqrt(cols), as initialised layers have), each group of 32 given the power-of-two scale that
brings its largest magnitude to at most 6 (E2M1's largest value) and each value rounded to the
nearest E2M1 value; deterministic (a seed). Non-expert tensors are there too (embeddings,
norms, router), small, so the directory passes the launcher's model checks.
`decode_mxfp4` is the test side's own decoder (numpy, float64), independent of the
converter's torch code; the AMX verification builds its reference from it.

Runs as a script too (`python mxfp4_checkpoint.py OUT --style v4`), e.g. on the AMX host.
Needs numpy only.
"""

from __future__ import annotations

import argparse
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

E2M1 = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
)
GROUP = 32
PROJ_V4 = {"gate": "w1", "up": "w3", "down": "w2"}
PROJ_HF = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


@dataclass(frozen=True)
class Spec:
    layers: int = 3
    experts: int = 16
    hidden: int = 256
    intermediate: int = 256
    top_k: int = 4
    mtp: int = 1
    vocab: int = 512
    shards: int = 3
    style: str = "v4"
    seed: int = 20260511
    # Uniform random bytes and scales instead of quantized Gaussians: the same format, made
    # fast enough for full-size layers (benchmarks), not for accuracy checks.
    random_codes: bool = False


def decode_mxfp4(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float64 [rows, cols] from uint8 [rows, cols/2] E2M1 pairs and uint8 [rows, cols/32]."""
    rows = weight.shape[0]
    pairs = np.stack((E2M1[weight & 0x0F], E2M1[weight >> 4]), axis=-1).reshape(rows, -1)
    factors = np.ldexp(1.0, scale.astype(np.int64) - 127)
    decoded: np.ndarray = pairs * np.repeat(factors, GROUP, axis=1)
    return decoded


def encode_mxfp4(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MXFP4 of float [rows, cols]: per group of 32 the smallest power-of-two scale that
    brings the group's largest magnitude to at most 6, then round to the nearest E2M1 value."""
    rows, cols = values.shape
    groups = values.reshape(rows, cols // GROUP, GROUP)
    amax = np.abs(groups).max(axis=-1)
    exponent = np.ceil(np.log2(np.maximum(amax, 2.0**-120) / 6.0)).astype(np.int64)
    scaled = groups / np.ldexp(1.0, exponent)[..., None]
    magnitude = np.abs(np.abs(scaled)[..., None] - E2M1[:8]).argmin(axis=-1)
    codes = (magnitude | (np.signbit(scaled) << 3)).astype(np.uint8).reshape(rows, cols)
    weight = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    return weight, (exponent + 127).astype(np.uint8)


def _mxfp4(
    rng: np.random.Generator, rows: int, cols: int, random_codes: bool
) -> tuple[np.ndarray, np.ndarray]:
    if random_codes:
        weight = rng.integers(0, 256, size=(rows, cols // 2), dtype=np.uint8)
        return weight, rng.integers(119, 124, size=(rows, cols // GROUP), dtype=np.uint8)
    return encode_mxfp4(rng.standard_normal((rows, cols)) / np.sqrt(cols))


def _bf16(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    values = rng.standard_normal(shape).astype(np.float32) * 0.02
    return (values.view(np.uint32) >> 16).astype(np.uint16)


def _prefixes(spec: Spec) -> list[tuple[int, str, str]]:
    """(kt-kernel layer index, expert key prefix, layer prefix) of every MoE layer."""
    result = []
    for index in range(spec.layers + spec.mtp):
        mtp = index >= spec.layers
        if spec.style == "v4":
            layer = f"mtp.{index - spec.layers}" if mtp else f"layers.{index}"
            result.append((index, f"{layer}.ffn.experts", layer))
        else:
            layer = f"model.layers.{index}"
            result.append((index, f"{layer}.mlp.experts", layer))
    return result


def expert_key(spec: Spec, prefix: str, expert: int, proj: str, part: str) -> str:
    names = PROJ_V4 if spec.style == "v4" else PROJ_HF
    suffix = part if spec.style == "v4" or part == "weight" else "weight_scale_inv"
    return f"{prefix}.{expert}.{names[proj]}.{suffix}"


def _write_shard(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, array) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        for _, array in tensors.values():
            handle.write(np.ascontiguousarray(array).tobytes())


def write_checkpoint(directory: Path, spec: Spec | None = None) -> Path:
    """Write the checkpoint (config.json, shards, index) into `directory`."""
    spec = spec or Spec()
    rng = np.random.default_rng(spec.seed)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["DeepseekV4ForCausalLM"],
        "model_type": "deepseek_v4",
        "hidden_size": spec.hidden,
        "moe_intermediate_size": spec.intermediate,
        "n_routed_experts": spec.experts,
        "n_shared_experts": 1,
        "num_experts_per_tok": spec.top_k,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "qk_rope_head_dim": 16,
        "vocab_size": spec.vocab,
        "num_nextn_predict_layers": spec.mtp,
        "expert_dtype": "fp4",
        "torch_dtype": "bfloat16",
        "quantization_config": {
            "quant_method": "fp8",
            "fmt": "e4m3",
            "scale_fmt": "ue8m0",
            "weight_block_size": [128, 128],
        },
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    v4 = spec.style == "v4"
    groups: list[dict[str, tuple[str, np.ndarray]]] = [
        {
            ("embed.weight" if v4 else "model.embed_tokens.weight"): (
                "BF16",
                _bf16(rng, (spec.vocab, spec.hidden)),
            ),
            ("norm.weight" if v4 else "model.norm.weight"): ("BF16", _bf16(rng, (spec.hidden,))),
        }
    ]
    for _, prefix, layer in _prefixes(spec):
        tensors: dict[str, tuple[str, np.ndarray]] = {
            f"{layer}.{'attn_norm' if v4 else 'input_layernorm'}.weight": (
                "BF16",
                _bf16(rng, (spec.hidden,)),
            ),
            f"{layer}.{'ffn' if v4 else 'mlp'}.gate.weight": (
                "BF16",
                _bf16(rng, (spec.experts, spec.hidden)),
            ),
        }
        for expert in range(spec.experts):
            for proj in ("gate", "up", "down"):
                rows, cols = (
                    (spec.hidden, spec.intermediate)
                    if proj == "down"
                    else (spec.intermediate, spec.hidden)
                )
                weight, scale = _mxfp4(rng, rows, cols, spec.random_codes)
                tensors[expert_key(spec, prefix, expert, proj, "weight")] = ("I8", weight)
                tensors[expert_key(spec, prefix, expert, proj, "scale")] = ("F8_E8M0", scale)
        groups.append(tensors)
    shards = min(spec.shards, len(groups))
    per_shard: list[dict[str, tuple[str, np.ndarray]]] = [{} for _ in range(shards)]
    for index, group in enumerate(groups):
        per_shard[index * shards // len(groups)].update(group)
    weight_map: dict[str, str] = {}
    total = 0
    for index, tensors in enumerate(per_shard):
        name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        _write_shard(directory / name, tensors)
        for key, (_, array) in tensors.items():
            weight_map[key] = name
            total += array.nbytes
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
    )
    return directory


def read_tensor(directory: Path, key: str) -> np.ndarray:
    """One tensor's raw bytes as uint8 with its stored shape (the test side's own reader)."""
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    path = directory / index["weight_map"][key]
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        entry = json.loads(handle.read(length))[key]
        start, stop = entry["data_offsets"]
        handle.seek(8 + length + start)
        data = handle.read(stop - start)
    return np.frombuffer(data, dtype=np.uint8).reshape(entry["shape"])


def spec_of(directory: Path) -> Spec:
    """The Spec a checkpoint written by `write_checkpoint` was made with (seed aside)."""
    config = json.loads((directory / "config.json").read_text())
    keys = json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"]
    return Spec(
        layers=config["num_hidden_layers"],
        experts=config["n_routed_experts"],
        hidden=config["hidden_size"],
        intermediate=config["moe_intermediate_size"],
        top_k=config["num_experts_per_tok"],
        mtp=config["num_nextn_predict_layers"],
        vocab=config["vocab_size"],
        style="hf" if any(key.startswith("model.") for key in keys) else "v4",
    )


def expert_values(
    directory: Path, layer_index: int, *, swap_nibbles: bool = False
) -> dict[str, np.ndarray]:
    """float64 gate/up [E, I, H] and down [E, H, I] of one MoE layer, decoded on the test side
    (`swap_nibbles` decodes them the wrong way round, for a wrong answer)."""
    spec = spec_of(directory)
    prefix = next(p for index, p, _ in _prefixes(spec) if index == layer_index)
    result = {}
    for proj in ("gate", "up", "down"):
        result[proj] = np.stack(
            [
                decode_mxfp4(
                    _swap(
                        read_tensor(directory, expert_key(spec, prefix, expert, proj, "weight")),
                        swap_nibbles,
                    ),
                    read_tensor(directory, expert_key(spec, prefix, expert, proj, "scale")),
                )
                for expert in range(spec.experts)
            ]
        )
    return result


def _swap(weight: np.ndarray, swap: bool) -> np.ndarray:
    return ((weight >> 4) | (weight << 4)).astype(np.uint8) if swap else weight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    defaults = Spec()
    for name in ("layers", "experts", "hidden", "intermediate", "top_k", "mtp", "seed"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name)
        )
    parser.add_argument("--style", choices=("v4", "hf"), default=defaults.style)
    args = parser.parse_args()
    fields = {k: v for k, v in vars(args).items() if k != "output"}
    write_checkpoint(args.output, Spec(**fields))
    print(args.output)


if __name__ == "__main__":
    main()
