"""Hostile input: every outcome is exit 0 or a documented code, in one line, never a hang."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kthybrid_serve.cli import main
from kthybrid_serve.errors import ALL_ERRORS

from tests.support.launcher_fixtures import GB, HostSpec, ModelSpec, build_host, build_model

RTX5090 = "NVIDIA GeForce RTX 5090,32607MiB,12.0"
DOCUMENTED = {0, 1} | {e.exit_code for e in ALL_ERRORS}
# Small dimensions: real headers, a few kB of sparse data; cheap to build per example.
TINY = ModelSpec(layers=4, experts=16, hidden=256, inter=128, vocab=1000, shards=2, nextn=0,
                 attention_bytes_per_layer=256 * 1024)  # fmt: skip


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    """main() in-process with KTHYBRID_* taken from `env` only; (code, out, err, seconds)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("KTHYBRID_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:
                code = int(exit_.code or 0)
    finally:
        for name in [k for k in os.environ if k.startswith("KTHYBRID_")]:
            del os.environ[name]
        os.environ.update(saved)
    return code, out.getvalue(), err.getvalue(), time.monotonic() - start


def well_behaved(code: int, err: str, seconds: float) -> None:
    assert code in DOCUMENTED, (code, err)
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 3, err
    assert seconds < 5, seconds


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("hostile")
    host = build_host(root / "host", HostSpec(cores_per_node=8, mem_bytes=512 * GB))
    model = build_model(root / "model", TINY)
    yield host, model


@pytest.fixture
def copies(base: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    host = tmp_path / "host"
    model = tmp_path / "model"
    shutil.copytree(base[0], host)
    build_model(model, TINY)  # sparse files: built, never copied
    return host, model


def plan(
    host: Path, model: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    code, _, err, seconds = run("plan", "--host-root", str(host), "--model", str(model),
                                "--gpu", RTX5090, *extra, env=env)  # fmt: skip
    well_behaved(code, err, seconds)
    return code, err


# -- model files ---------------------------------------------------------------------

HEADER_CASES: dict[str, object] = {
    "a list": [1, 2, 3],
    "no data_offsets": {"x.weight": {"dtype": "BF16", "shape": [2]}},
    "string offsets": {"x.weight": {"dtype": "BF16", "shape": [2], "data_offsets": ["0", "4"]}},
    "negative offsets": {"x.weight": {"dtype": "BF16", "shape": [2], "data_offsets": [-4, 0]}},
    "reversed offsets": {"x.weight": {"dtype": "BF16", "shape": [2], "data_offsets": [8, 4]}},
    "float offsets": {"x.weight": {"dtype": "BF16", "shape": [2], "data_offsets": [0.5, 4]}},
    "shape of strings": {"x.weight": {"dtype": "BF16", "shape": ["a"], "data_offsets": [0, 4]}},
    "dtype object": {"x.weight": {"dtype": {}, "shape": [2], "data_offsets": [0, 4]}},
    "entry a string": {"x.weight": "nope"},
}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_corrupt_safetensors_headers_are_refused(copies: tuple[Path, Path], case: str) -> None:
    host, model = copies
    raw = json.dumps(HEADER_CASES[case]).encode()
    (model / "model-00001-of-00002.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    code, err = plan(host, model)
    assert code == 17 and "safetensors header" in err


def test_nan_offsets_are_refused(copies: tuple[Path, Path]) -> None:
    host, model = copies
    raw = b'{"x.weight": {"dtype": "BF16", "shape": [2], "data_offsets": [NaN, 4]}}'
    (model / "model-00001-of-00002.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    assert plan(host, model)[0] == 17


@pytest.mark.parametrize(
    "weight_map",
    [[], ["a.safetensors"], {"x": 3}, {"x": "../../etc/passwd"}, {"x": "/etc/passwd"}, "str"],
)
def test_bad_index_weight_maps_are_refused(copies: tuple[Path, Path], weight_map: object) -> None:
    host, model = copies
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    code, err = plan(host, model)
    assert code == 17, err


@pytest.mark.parametrize(
    "config",
    [
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        b'{"num_hidden_layers": 1000000000000, "n_routed_experts": 16}',
        b'{"num_hidden_layers": "43"}',
        b'{"num_hidden_layers": -1}',
        b'{"num_hidden_layers": 4, "moe_layer_freq": 0}',
        b'{"num_hidden_layers": 4, "n_routed_experts": 1e400}',
        b"{" * 100000,
    ],
)
def test_bad_configs_are_refused_quickly(copies: tuple[Path, Path], config: bytes) -> None:
    host, model = copies
    (model / "config.json").write_bytes(config)
    assert plan(host, model)[0] == 17


def test_a_fifo_config_does_not_hang(copies: tuple[Path, Path]) -> None:
    host, model = copies
    (model / "config.json").unlink()
    os.mkfifo(model / "config.json")
    code, err = plan(host, model)
    assert code == 17 and "regular file" in err


# -- host trees ----------------------------------------------------------------------

HOST_FILES: dict[str, list[str]] = {
    "/sys/devices/system/cpu/online": ["abc", "0-15:0", "0-99999999999", "5-2", "-1"],
    "/sys/devices/system/node/node0/cpulist": ["x", "0-8192"],
    "/sys/fs/cgroup/memory.max": ["lots", "-5", "1e9"],
    "/sys/fs/cgroup/cpu.max": ["half", "100 0", "max max"],
    "/sys/fs/cgroup/cpuset.cpus.effective": ["all"],
    "/proc/self/mounts": ["shm /dev/shm tmpfs rw,size=huge 0 0"],
    "/sys/devices/system/cpu/cpu0/topology/core_id": ["zero", "99999999999999999999999"],
    "/proc/self/limits": ["Max locked memory         lots lots bytes"],
}


@pytest.mark.parametrize(
    ("path", "text"), [(p, t) for p, texts in HOST_FILES.items() for t in texts]
)
def test_garbage_host_files_are_refused(copies: tuple[Path, Path], path: str, text: str) -> None:
    host, model = copies
    (host / path.lstrip("/")).write_text(text + "\n")
    code, err = plan(host, model)
    assert code == 22, err


def test_a_fifo_where_cpuinfo_should_be_does_not_hang(copies: tuple[Path, Path]) -> None:
    host, model = copies
    (host / "proc/cpuinfo").unlink()
    os.mkfifo(host / "proc/cpuinfo")
    code, err = plan(host, model)
    assert code == 22 and "regular file" in err


# -- settings ------------------------------------------------------------------------

BAD_SETTINGS: list[tuple[str, str]] = [
    ("KTHYBRID_PORT", "0"),
    ("KTHYBRID_PORT", "99999"),
    ("KTHYBRID_CONTEXT_LENGTH", "0"),
    ("KTHYBRID_KT_CPUINFER", "0"),
    ("KTHYBRID_CUDA_GRAPH_BS", "-1"),
    ("KTHYBRID_KT_NUMA_NODES", "0,0"),
    ("KTHYBRID_NNODES", "0"),
    ("KTHYBRID_NODE_RANK", "3"),
    ("KTHYBRID_EXTRA_ARGS", '"x'),
    ("KTHYBRID_EXTRA_ARGS", "--log-level debug"),
    ("KTHYBRID_EXTRA_ARGS", '["ok", 3]'),
    ("KTHYBRID_MEM_FRACTION_STATIC", "1.5"),
    ("KTHYBRID_MEM_FRACTION_STATIC", "nan"),
    ("KTHYBRID_HOST", "0.0.0.0\nhostNetwork: true"),
    ("KTHYBRID_SERVED_MODEL_NAME", "a b\nc"),
    ("KTHYBRID_ATTENTION_BACKEND", "flashinfer; rm -rf /"),
    ("KTHYBRID_DIST_INIT_ADDR", "host:0"),
    ("KTHYBRID_TARGETS_FILE", "/nonexistent/targets.yaml"),
    ("KTHYBRID_MTP", "maybe"),
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_bad_settings_are_usage_errors(copies: tuple[Path, Path], name: str, value: str) -> None:
    host, model = copies
    code, err = plan(host, model, env={name: value})
    assert code == 2, err
    assert name in err


@pytest.mark.parametrize("spec", ["RTX,0,12.0", "RTX,32GiB,twelve", "RTX\nx,32GiB,12.0", ",,"])
def test_bad_gpu_specs_are_usage_errors(copies: tuple[Path, Path], spec: str) -> None:
    host, model = copies
    code, _, err, seconds = run("plan", "--host-root", str(host), "--model", str(model),
                                "--gpu", spec)  # fmt: skip
    well_behaved(code, err, seconds)
    assert code == 2 and "--gpu" in err


def test_node_rank_at_nnodes_is_refused(copies: tuple[Path, Path]) -> None:
    host, model = copies
    env = {"KTHYBRID_NNODES": "2", "KTHYBRID_NODE_RANK": "2",
           "KTHYBRID_DIST_INIT_ADDR": "10.0.0.1:5000"}  # fmt: skip
    code, err = plan(host, model, env=env)
    assert code == 2 and "below KTHYBRID_NNODES=2" in err


def test_a_missing_api_key_file_is_refused_before_loading(copies: tuple[Path, Path]) -> None:
    host, model = copies
    code, err = plan(host, model, env={"KTHYBRID_API_KEY_FILE": str(host / "no-such-key")})
    assert code == 2 and "KTHYBRID_API_KEY_FILE" in err


# -- properties ----------------------------------------------------------------------

garbage = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[0-9,:\- ]{0,20}", fullmatch=True),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["max", "max 100000", "0", "", "\x00", "1e308", "0-0:0"]),
)
READ_FILES = sorted({
    *HOST_FILES, "/proc/meminfo", "/proc/cpuinfo", "/proc/self/status", "/proc/self/cgroup",
    "/sys/devices/system/node/node0/meminfo", "/sys/fs/cgroup/memory.high",
    "/sys/fs/cgroup/cpuset.mems.effective", "/sys/devices/system/cpu/isolated",
    "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages",
})  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.sampled_from(READ_FILES), text=garbage)
def test_any_garbage_in_any_host_file_is_handled(
    base: tuple[Path, Path], path: str, text: str
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        host = Path(scratch) / "host"
        shutil.copytree(base[0], host)
        (host / path.lstrip("/")).write_text(text, errors="surrogateescape")
        plan(host, base[1])


json_values: Callable[..., st.SearchStrategy[object]] = lambda: st.recursive(  # noqa: E731
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
              st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    entry=json_values(),
    config=st.dictionaries(
        st.sampled_from(["num_hidden_layers", "n_routed_experts", "moe_layer_freq",
                         "first_k_dense_replace", "hidden_size", "head_dim"]),
        json_values(), max_size=4),
)  # fmt: skip
def test_any_header_or_config_is_handled(
    base: tuple[Path, Path], entry: object, config: dict[str, object]
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        model = build_model(Path(scratch) / "model", TINY)
        raw = json.dumps({"layers.0.ffn.experts.0.w1.weight": entry}).encode()
        (model / "model-00002-of-00002.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
        merged = json.loads((model / "config.json").read_text()) | config
        (model / "config.json").write_text(json.dumps(merged))
        plan(base[0], model)


def test_the_generators_produce_a_plannable_host(base: tuple[Path, Path]) -> None:
    """The property tests start from a host and model that do plan (exit 0)."""
    assert plan(*base)[0] == 0
