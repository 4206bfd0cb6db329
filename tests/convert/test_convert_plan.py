"""What the converter decides from headers and the file system, before torch or kt-kernel load.

Real files throughout: tiny checkpoints with real MXFP4 data, their headers edited where a
test needs a broken one, output directories with files of the sizes kt-kernel writes.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from kthybrid_serve.convert import ConvertRequest, plan_conversion
from kthybrid_serve.convert.checkpoint import read_checkpoint
from kthybrid_serve.convert.layout import (
    LAYER_MARKER,
    MANIFEST,
    STAGING,
    Geometry,
)
from kthybrid_serve.convert.run import SPACE_MARGIN, manifest_for
from kthybrid_serve.errors import (
    CpuTopologyError,
    HostMemoryError,
    ModelIncompleteError,
    WeightFormatError,
)

TINY = Geometry(experts=16, hidden=256, intermediate=256, pools=1)


def request(model: Path, output: Path, pools: int = 1, **fields: object) -> ConvertRequest:
    return ConvertRequest(model, output, threads=2, numa_nodes=(0,) * pools, **fields)  # type: ignore[arg-type]


def copy_model(model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model, tmp_path / model.name))


def edit_header(shard: Path, edit: Callable[[dict[str, dict[str, object]]], None]) -> None:
    """Rewrite a shard's JSON header in place, keeping its data."""
    raw = shard.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    edit(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    shard.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])


def shard_of(model: Path, key: str) -> Path:
    index = json.loads((model / "model.safetensors.index.json").read_text())
    return model / index["weight_map"][key]


def test_both_key_styles_are_read_as_the_same_moe_layers(tiny_v4: Path, tiny_hf: Path) -> None:
    v4, hf = read_checkpoint(tiny_v4), read_checkpoint(tiny_hf)
    assert (v4.key_style, hf.key_style) == ("v4", "hf")
    assert [(layer.index, layer.mtp) for layer in v4.layers] == [
        (0, False), (1, False), (2, False), (3, True),
    ]  # fmt: skip
    assert [layer.name for layer in v4.layers] == ["layers.0", "layers.1", "layers.2", "mtp.0"]
    assert [layer.name for layer in hf.layers][-1] == "model.layers.3"
    for a, b in zip(v4.layers, hf.layers, strict=True):
        assert a.index == b.index and a.mtp == b.mtp
        for expert_a, expert_b in zip(a.experts, b.experts, strict=True):
            for proj in ("gate", "up", "down"):
                for part in ("weight", "scale"):
                    ta = getattr(expert_a[proj], part)
                    tb = getattr(expert_b[proj], part)
                    assert (ta.dtype, ta.shape, ta.nbytes) == (tb.dtype, tb.shape, tb.nbytes)


def test_v4_names_map_w1_to_gate_w3_to_up_and_w2_to_down(tiny_v4: Path) -> None:
    expert = read_checkpoint(tiny_v4).layers[1].experts[5]
    assert expert["gate"].weight.key == "layers.1.ffn.experts.5.w1.weight"
    assert expert["up"].scale.key == "layers.1.ffn.experts.5.w3.scale"
    assert expert["down"].weight.key == "layers.1.ffn.experts.5.w2.weight"
    assert expert["down"].weight.shape == (256, 128)  # [hidden, intermediate / 2]
    assert expert["down"].scale.shape == (256, 8)  # one scale per 32 values


def test_the_layout_is_kt_kernels_file_set_per_pool() -> None:
    files = dict(Geometry(experts=16, hidden=256, intermediate=256, pools=2).files())
    assert len(files) == 2 * 16 * 3 * 2
    # Pool 1 holds rows 128..255 of gate/up and columns 128..255 of down: 128 x 256 each.
    assert files["_numa_1/INT4_gate_15_16384Byte_quant_.kt"] == 128 * 256 // 2
    assert files["_numa_1/INT4_gate_15_512Byte_scale_.kt"] == 128 * 4
    assert files["_numa_0/INT4_down_0_16384Byte_quant_.kt"] == 256 * 128 // 2
    assert files["_numa_0/INT4_down_0_1024Byte_scale_.kt"] == 256 * 4  # a scale per hidden row


def test_v4_flash_layers_need_the_bytes_kt_kernel_writes() -> None:
    real = Geometry(experts=256, hidden=4096, intermediate=2048, pools=4)
    # 3 matrices of 2048 x 4096 int4 per expert plus one float per row.
    per_expert = 3 * 2048 * 4096 // 2 + (512 * 2 + 4096) * 4 * 4
    assert real.layer_bytes == 256 * per_expert


def test_a_pool_count_the_tiles_cannot_split_is_refused(tiny_v4: Path, tmp_path: Path) -> None:
    with pytest.raises(CpuTopologyError) as refused:
        plan_conversion(request(tiny_v4, tmp_path / "out", pools=3))
    assert "3 thread pools cannot split moe_intermediate_size 256" in refused.value.message
    assert "use one of 1, 2 pools" in refused.value.message


def test_a_missing_expert_tensor_is_named(tiny_v4: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_v4, tmp_path)
    key = "layers.1.ffn.experts.5.w3.scale"
    edit_header(shard_of(model, key), lambda header: header.pop(key))
    with pytest.raises(ModelIncompleteError) as refused:
        read_checkpoint(model)
    assert "MoE layer layers.1 lacks 1 expert tensors (expert 5 up scale)" in refused.value.message


def test_experts_that_are_not_mxfp4_are_refused(tiny_v4: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_v4, tmp_path)
    key = "layers.0.ffn.experts.0.w1.weight"

    def to_bf16(header: dict[str, dict[str, object]]) -> None:
        header[key]["dtype"] = "BF16"
        header[key]["shape"] = [256, 64]  # the same bytes as BF16

    edit_header(shard_of(model, key), to_bf16)
    with pytest.raises(WeightFormatError) as refused:
        read_checkpoint(model)
    assert f"{key} is BF16, not MXFP4" in refused.value.message


def test_experts_that_do_not_match_config_json_are_refused(tiny_v4: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_v4, tmp_path)
    config = json.loads((model / "config.json").read_text())
    config["moe_intermediate_size"] = 512
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightFormatError) as refused:
        read_checkpoint(model)
    assert "where config.json implies [512, 128]" in refused.value.message


def test_a_checkpoint_without_routed_experts_is_refused(tmp_path: Path, tiny_v4: Path) -> None:
    model = copy_model(tiny_v4, tmp_path)
    for shard in model.glob("*.safetensors"):
        edit_header(shard, lambda h: [h.pop(k) for k in list(h) if ".experts." in k])
    with pytest.raises(WeightFormatError, match="holds no routed experts in either key style"):
        read_checkpoint(model)


def test_the_output_may_not_be_the_model_directory(tiny_v4: Path) -> None:
    with pytest.raises(WeightFormatError, match="is the model directory or inside it"):
        plan_conversion(request(tiny_v4, tiny_v4 / "AMXINT4"))


def test_an_output_holding_other_files_is_refused(tiny_v4: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    (output / "_layer_0").mkdir(parents=True)
    with pytest.raises(WeightFormatError, match="holds files this converter did not write"):
        plan_conversion(request(tiny_v4, output))


def test_an_output_converted_for_other_pools_is_refused(tiny_v4: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    other = Geometry(16, 256, 256, pools=2)
    (output / MANIFEST).write_text(manifest_for(read_checkpoint(tiny_v4), other).to_json())
    with pytest.raises(WeightFormatError) as refused:
        plan_conversion(request(tiny_v4, output, pools=1))
    assert "holds a conversion with pools 2 (this run: 1)" in refused.value.message


def write_layer(directory: Path, geometry: Geometry, *, marker: bool = True) -> None:
    """A layer directory with every file at the size kt-kernel writes (sparse)."""
    for relative, size in geometry.files():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            handle.truncate(size)
    if marker:
        (directory / LAYER_MARKER).write_text("{}\n")


def test_a_rerun_skips_complete_layers_and_redoes_broken_and_half_done_ones(
    tiny_v4: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / MANIFEST).write_text(manifest_for(read_checkpoint(tiny_v4), TINY).to_json())
    write_layer(output / "_layer_0", TINY)  # complete
    write_layer(output / "_layer_1", TINY)
    next((output / "_layer_1").rglob("INT4_up_3_*quant_.kt")).unlink()  # damaged since
    write_layer(output / STAGING / "_layer_2", TINY, marker=False)  # a run stopped in it
    plan = plan_conversion(request(tiny_v4, output))
    states = {item.layer.index: item.state for item in plan.layers}
    assert states == {0: "done", 1: "redo", 2: "resume", 3: "todo"}
    redo = next(item for item in plan.layers if item.state == "redo")
    assert any("INT4_up_3_" in problem and "missing" in problem for problem in redo.problems)
    assert plan.needed_bytes == 3 * TINY.layer_bytes + SPACE_MARGIN


def test_a_complete_output_needs_nothing(tiny_v4: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / MANIFEST).write_text(manifest_for(read_checkpoint(tiny_v4), TINY).to_json())
    for layer in range(4):
        write_layer(output / f"_layer_{layer}", TINY)
    plan = plan_conversion(request(tiny_v4, output, memory_available=1))
    assert plan.todo == [] and plan.needed_bytes == 0


def test_too_little_memory_for_one_layer_is_refused(tiny_v4: Path, tmp_path: Path) -> None:
    with pytest.raises(HostMemoryError) as refused:
        plan_conversion(request(tiny_v4, tmp_path / "out", memory_available=1024**2))
    assert "converting one layer needs" in refused.value.message
    assert "1.0 MiB is available" in refused.value.message


def test_the_launcher_and_the_converter_import_without_torch_or_kt_kernel() -> None:
    code = (
        "import sys; import kthybrid_serve.cli, kthybrid_serve.convert; "
        "assert 'torch' not in sys.modules and 'kt_kernel' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
