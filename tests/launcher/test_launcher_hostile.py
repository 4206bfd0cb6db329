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


# -- issue 20: the API key, usage errors, GPUs no target serves ----------------------


def test_an_empty_api_key_file_variable_is_refused_not_taken_as_no_key(
    copies: tuple[Path, Path],
) -> None:
    host, model = copies
    for empty in ("", "  "):
        code, err = plan(host, model, env={"KTHYBRID_API_KEY_FILE": empty})
        assert code == 2, err
        assert "KTHYBRID_API_KEY_FILE is set but empty" in err


@pytest.mark.parametrize(
    "args",
    [
        '["--api-key", "secret"]',
        '["--api-key=secret"]',
        '["--log-level", "info", "--api-k", "secret"]',
        '["--api", "secret"]',
        '["--admin-api-key", "secret"]',
        '["--admin-api=secret"]',
    ],
)
def test_extra_args_may_not_carry_an_api_key(copies: tuple[Path, Path], args: str) -> None:
    host, model = copies
    code, err = plan(host, model, env={"KTHYBRID_EXTRA_ARGS": args})
    assert code == 2, err
    assert "would put the API key on the command line" in err
    assert "KTHYBRID_API_KEY_FILE" in err


def test_the_extra_args_flag_may_not_carry_an_api_key_either(copies: tuple[Path, Path]) -> None:
    host, model = copies
    code, err = plan(host, model, "--extra-args", '["--api-key", "secret"]')
    assert code == 2 and "--api-key would put the API key" in err


def test_options_that_only_start_like_the_key_pass(copies: tuple[Path, Path]) -> None:
    host, model = copies
    code, err = plan(host, model, env={"KTHYBRID_EXTRA_ARGS": '["--log-level", "info"]'})
    assert code == 0, err


@pytest.mark.parametrize("args", [["plan", "--bogus"], ["plann"], ["doctor", "--json", "x"]])
def test_usage_errors_name_the_program_once(args: list[str]) -> None:
    code, _, err, seconds = run(*args)
    well_behaved(code, err, seconds)
    assert code == 2
    assert "kthybrid-serve kthybrid-serve" not in err
    assert "(see kthybrid-serve" in err and "--help)" in err


@pytest.mark.parametrize("cc", ["99.9", "7.5", "12.9"])
def test_a_compute_capability_no_target_serves_is_refused(
    copies: tuple[Path, Path], cc: str
) -> None:
    host, model = copies
    code, _, err, seconds = run("plan", "--host-root", str(host), "--model", str(model),
                                "--gpu", f"Some GPU,32GiB,{cc}")  # fmt: skip
    well_behaved(code, err, seconds)
    assert code == 11, err
    assert f"compute capability {cc}, which no kthybrid target serves" in err


# -- issue 20: JSON the launcher reads is bounded; convert reads config.json like plan -------

DEEP = 100  # past untrusted.MAX_JSON_DEPTH (64), far below Python's recursion limit
HUGE = "9" * 4301  # past Python's int(str) limit of 4300 digits


def plan_json_error(
    host: Path, model: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    """`plan --json`: the exit code and the error object it printed on stdout."""
    code, out, err, seconds = run("plan", "--host-root", str(host), "--model", str(model),
                                  "--gpu", RTX5090, "--json", *extra, env=env)  # fmt: skip
    well_behaved(code, err, seconds)
    error: dict[str, object] = json.loads(out)["error"]
    assert error["code"] == code
    return code, error


@pytest.mark.parametrize(
    "config",
    [
        b'{"num_hidden_layers": ' + HUGE.encode() + b"}",
        b'{"num_hidden_layers": 4, "x": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        b'{"num_hidden_layers": 4, "x": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}",
        b'{"num_hidden_layers": NaN}',
        b'{"num_hidden_layers": Infinity}',
    ],
    ids=["huge-int", "deep-lists", "deep-objects", "nan", "infinity"],
)
def test_config_json_past_the_bounds_is_a_refusal_in_json_too(
    copies: tuple[Path, Path], config: bytes
) -> None:
    host, model = copies
    (model / "config.json").write_bytes(config)
    code, error = plan_json_error(host, model)
    assert code == 17 and "config.json" in str(error["message"])


@pytest.mark.parametrize(
    "index",
    [
        '{"weight_map": {"x": "model-00001-of-00002.safetensors"}, "n": ' + HUGE + "}",
        '{"weight_map": ' + "[" * DEEP + "]" * DEEP + "}",
    ],
    ids=["huge-int", "deep"],
)
def test_a_safetensors_index_past_the_bounds_is_refused(
    copies: tuple[Path, Path], index: str
) -> None:
    host, model = copies
    (model / "model.safetensors.index.json").write_text(index)
    code, error = plan_json_error(host, model)
    assert code == 17 and "model.safetensors.index.json" in str(error["message"])


@pytest.mark.parametrize(
    "raw",
    [
        b'{"x": {"dtype": "BF16", "shape": [2], "data_offsets": [0, ' + HUGE.encode() + b"]}}",
        b'{"x": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    ],
    ids=["huge-int", "deep"],
)
def test_a_shard_header_past_the_bounds_is_refused(copies: tuple[Path, Path], raw: bytes) -> None:
    host, model = copies
    (model / "model-00001-of-00002.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    code, error = plan_json_error(host, model)
    assert code == 17 and "safetensors header" in str(error["message"])


@pytest.mark.parametrize(
    "value",
    ["[" * DEEP + "]" * DEEP, '["--x", ' + HUGE + "]", '["--x", NaN]', "[" * 200_000],
    ids=["deep", "huge-int", "nan", "very-deep"],
)
def test_extra_args_past_the_bounds_are_usage_errors_in_json_too(
    copies: tuple[Path, Path], value: str
) -> None:
    host, model = copies
    code, error = plan_json_error(host, model, env={"KTHYBRID_EXTRA_ARGS": value})
    assert code == 2 and "KTHYBRID_EXTRA_ARGS" in str(error["message"])


def _convert(host: Path, model: Path) -> tuple[int, str]:
    code, _, err, seconds = run("convert", "--host-root", str(host), "--model", str(model))
    well_behaved(code, err, seconds)
    return code, err


def test_convert_refuses_a_fifo_config_at_once(copies: tuple[Path, Path]) -> None:
    host, model = copies
    (model / "config.json").unlink()
    os.mkfifo(model / "config.json")
    code, err = _convert(host, model)
    assert code == 17 and "regular file" in err


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_convert_refuses_a_device_config_at_once(copies: tuple[Path, Path], device: str) -> None:
    host, model = copies
    (model / "config.json").unlink()
    (model / "config.json").symlink_to(device)
    code, err = _convert(host, model)
    assert code == 17 and "regular file" in err


def test_convert_refuses_a_config_with_a_huge_integer(copies: tuple[Path, Path]) -> None:
    host, model = copies
    (model / "config.json").write_text('{"hidden_size": ' + HUGE + "}")
    code, err = _convert(host, model)
    assert code == 17 and "config.json" in err


# -- issue 20: safetensors consistency ----------------------------------------------------

LAYOUT_CASES: dict[str, tuple[dict[str, object], str]] = {
    "offsets shorter than shape x dtype": (
        {"x": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 16]}},
        "needs 32",
    ),
    "offsets longer than shape x dtype": (
        {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}},
        "needs 8",
    ),
    "half a byte": ({"x": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]}}, "needs 1.5"),
    "unknown dtype": (
        {"x": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 2]}},
        "is not a safetensors dtype",
    ),
    "overlap": (
        {
            "a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
            "b": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]},
        },
        "overlap",
    ),
}


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_inconsistent_safetensors_layouts_are_refused(copies: tuple[Path, Path], case: str) -> None:
    host, model = copies
    header, expected = LAYOUT_CASES[case]
    raw = json.dumps(header).encode()
    (model / "model-00001-of-00002.safetensors").write_bytes(
        struct.pack("<Q", len(raw)) + raw + bytes(64)
    )
    code, err = plan(host, model)
    assert code == 17 and "safetensors header" in err and expected in err, err


def test_a_tensor_past_the_end_of_its_file_is_refused(copies: tuple[Path, Path]) -> None:
    host, model = copies
    raw = json.dumps({"x": {"dtype": "U8", "shape": [4096], "data_offsets": [0, 4096]}}).encode()
    (model / "model-00001-of-00002.safetensors").write_bytes(
        struct.pack("<Q", len(raw)) + raw + bytes(100)
    )
    code, err = plan(host, model)
    assert code == 17 and "model-00001-of-00002.safetensors" in err, err


def test_a_header_of_a_million_entries_is_refused_fast(copies: tuple[Path, Path]) -> None:
    host, model = copies
    entry = '"t%d": {"dtype": "U8", "shape": [1], "data_offsets": [%d, %d]}'
    raw = ("{" + ",".join(entry % (i, i, i + 1) for i in range(1_000_000)) + "}").encode()
    (model / "model-00001-of-00002.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    code, err = plan(host, model)  # well_behaved: under 5 s
    assert code == 17 and "more than 131072 tensors in one shard" in err, err


# -- issue 20: tune records are input too ---------------------------------------------------


# All routed experts on the CPU, so the plan plans threads and reads the record.
CPU_EXPERTS = {"KTHYBRID_KT_NUM_GPU_EXPERTS": "0"}


@pytest.fixture
def record(
    copies: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, Path, Path]]:
    """(host, model, record path): a valid record for this host, model shape and method."""
    from kthybrid_serve.cpubench.tuning import store
    from kthybrid_serve.host.host import read_host
    from kthybrid_serve.model.experts import expert_shape
    from kthybrid_serve.model.model import read_model
    from kthybrid_serve.plan.records import tune_dir, tune_key

    host, model = copies
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, out, err, _ = run("plan", "--host-root", str(host), "--model", str(model),
                            "--gpu", RTX5090, "--json", env=CPU_EXPERTS)  # fmt: skip
    assert code == 0, err
    method = {i["name"]: i["value"] for i in json.loads(out)["items"]}["--kt-method"]
    key = tune_key(read_host(str(host), [RTX5090]), expert_shape(read_model(str(model))), method)
    chosen = {"threads": 5, "pools": 1, "threads_per_pool": [5], "numa_nodes": [0],
              "labels": ["sweep"], "gbps": 40.0}  # fmt: skip
    result = {"runs": [chosen], "plan_threads": 5, "plan_gbps": 40.0, "bandwidth_gbps": 90.0}
    path = store(tune_dir({"XDG_CACHE_HOME": str(tmp_path / "cache")}), key, result, chosen)
    assert plan(host, model, env=CPU_EXPERTS)[0] == 0
    yield host, model, path


def _damage(path: Path, **fields: object) -> None:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def test_a_record_larger_than_1_mib_is_refused_unread(record: tuple[Path, Path, Path]) -> None:
    host, model, path = record
    with path.open("a") as handle:
        handle.truncate(1024**2 + 1)
    code, err = plan(host, model, env=CPU_EXPERTS)
    assert code == 28 and "more than a record's 1048576" in err, err


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"threads": 4096, "threads_per_pool": [4096]}, "usable physical cores here"),
        ({"threads": 10**40, "threads_per_pool": [10**40]}, "a whole number"),
        ({"gbps": -3.0}, "finite number above 0"),
        ({"gbps": 0}, "finite number above 0"),
        ({"bandwidth_gbps": 1e300}, "finite number above 0"),
        ({"gbps": "fast"}, "damaged"),
        ({"numa_nodes": [7], "threads_per_pool": [5]}, "NUMA node 7"),
    ],
    ids=["beyond-cores", "huge", "negative", "zero", "absurd", "string", "absent-node"],
)
def test_impossible_record_figures_are_refused(
    record: tuple[Path, Path, Path], fields: dict[str, object], expected: str
) -> None:
    host, model, path = record
    _damage(path, **fields)
    code, err = plan(host, model, env=CPU_EXPERTS)
    assert code == 28 and expected in err and str(path) in err, err


@pytest.mark.parametrize(
    "text",
    [
        '{"format": 1, "x": ' + "[" * DEEP + "]" * DEEP + "}",
        '{"format": 1, "threads": ' + HUGE + "}",
        '{"format": 1, "gbps": NaN}',
        '{"format": 1, "gbps": 1e999}',
    ],
    ids=["deep", "huge-int", "nan", "overflow"],
)
def test_records_past_the_json_bounds_are_refused(
    record: tuple[Path, Path, Path], text: str
) -> None:
    host, model, path = record
    path.write_text(text)
    code, err = plan(host, model, env=CPU_EXPERTS)
    assert code == 28 and "tune record" in err, err


def test_a_fifo_record_is_refused_not_waited_on(record: tuple[Path, Path, Path]) -> None:
    host, model, path = record
    path.unlink()
    os.mkfifo(path)
    code, err = plan(host, model, env=CPU_EXPERTS)
    assert code == 28 and "regular file" in err, err


def test_control_characters_in_a_record_are_escaped_in_the_plan(
    record: tuple[Path, Path, Path],
) -> None:
    host, model, path = record
    _damage(path, measured_at="2026-12-04\x1b[2J\x07\u202e")
    code, out, err, _ = run("plan", "--host-root", str(host), "--model", str(model),
                            "--gpu", RTX5090, env=CPU_EXPERTS)  # fmt: skip
    assert code == 0, err
    assert "measured by `kthybrid-serve tune`" in out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "2026-12-04\\x1b[2J\\x07\\u202e" in out


# -- issue 20: output hygiene and silent acceptances ---------------------------------------

HOSTILE_TEXT = "Evil\x1b[2J\x1b]0;pwned\x07\r\nkthybrid-serve: error: fake\u202etxt.exe\x9b"
RAW_CONTROLS = ("\x1b", "\x07", "\r", "\u202e", "\x9b")


def _assert_escaped(out: str) -> None:
    for raw in RAW_CONTROLS:
        assert raw not in out, repr(raw)
    assert "Evil\\x1b[2J" in out
    assert "kthybrid-serve: error: fake" not in out.splitlines()[0]
    assert not any(line.startswith("kthybrid-serve: error: fake") for line in out.splitlines())


def test_a_hostile_cpu_model_name_is_escaped_in_plan_and_doctor(
    copies: tuple[Path, Path],
) -> None:
    host, model = copies
    cpuinfo = host / "proc/cpuinfo"
    lines = [
        f"model name\t: {HOSTILE_TEXT}" if line.startswith("model name") else line
        for line in cpuinfo.read_text().splitlines()
    ]
    cpuinfo.write_text("\n".join(lines) + "\n")
    for command in ("plan", "doctor"):
        code, out, err, seconds = run(command, "--host-root", str(host), "--model", str(model),
                                      "--gpu", RTX5090)  # fmt: skip
        well_behaved(code, err, seconds)
        assert out, err
        _assert_escaped(out)


def test_a_hostile_model_architecture_is_escaped_in_the_plan(copies: tuple[Path, Path]) -> None:
    host, model = copies
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = [HOSTILE_TEXT]
    config["model_type"] = HOSTILE_TEXT
    (model / "config.json").write_text(json.dumps(config))
    code, out, err, seconds = run("plan", "--host-root", str(host), "--model", str(model),
                                  "--gpu", RTX5090)  # fmt: skip
    well_behaved(code, err, seconds)
    for raw in RAW_CONTROLS:
        assert raw not in out + err, repr(raw)


@pytest.mark.parametrize("garbage", ["garbage", "MemFree: 12 kB\n", "\x00\x01", "MemTotal: lots"])
def test_garbage_proc_meminfo_is_refused_even_with_node_meminfo(
    copies: tuple[Path, Path], garbage: str
) -> None:
    host, model = copies
    assert (host / "sys/devices/system/node/node0/meminfo").is_file()
    (host / "proc/meminfo").write_text(garbage)
    code, err = plan(host, model)
    assert code == 22, err
    assert "/proc/meminfo holds no MemTotal line" in err


def test_garbage_node_meminfo_is_refused_naming_the_file(copies: tuple[Path, Path]) -> None:
    host, model = copies
    (host / "sys/devices/system/node/node0/meminfo").write_text("nothing useful\n")
    code, err = plan(host, model)
    assert code == 22 and "node0/meminfo holds no MemTotal line" in err, err
