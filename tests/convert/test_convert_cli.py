"""`kthybrid-serve convert` before any work: threads and pools from the host, refusals.

Host trees are the launcher tests' fixtures (a copy of /sys and /proc, read through
--host-root); the models are tiny checkpoints with real MXFP4 data. torch and kt-kernel are
not installed here, which is itself a case: the converter refuses in one line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kthybrid_serve.cli import main
from kthybrid_serve.settings import resolve_settings
from kthybrid_serve.workflow import prepare_conversion

from tests.support.launcher_fixtures import AVX2_FLAGS, HostSpec, build_host


@pytest.fixture
def four_nodes(tmp_path: Path) -> Path:
    """The tutorial's host: 2 sockets x 2 NUMA nodes x 16 cores, AMX."""
    return build_host(tmp_path / "host", HostSpec(sockets=2, nodes_per_socket=2, cores_per_node=16))


def request_for(host: Path, model: Path, **values: object) -> tuple[object, list[str]]:
    settings = resolve_settings({"host_root": str(host), "model": str(model), **values}, {})
    return prepare_conversion(settings)  # type: ignore[return-value]


def test_conversion_uses_every_core_in_one_pool_per_node(four_nodes: Path, tiny_v4: Path) -> None:
    request, notes = request_for(four_nodes, tiny_v4)
    assert request.threads == 64  # type: ignore[attr-defined]
    assert request.numa_nodes == (0, 1, 2, 3)  # type: ignore[attr-defined]
    assert request.output == Path(f"{tiny_v4}-AMXINT4")  # type: ignore[attr-defined]
    assert notes == []  # the host has AMX


def test_a_pool_count_for_a_bigger_host_shares_this_hosts_nodes(
    four_nodes: Path, tiny_v4: Path
) -> None:
    request, _ = request_for(four_nodes, tiny_v4, kt_threadpool_count=8, output="/tmp/x")
    assert request.numa_nodes == (0, 1, 2, 3, 0, 1, 2, 3)  # type: ignore[attr-defined]
    assert request.output == Path("/tmp/x")  # type: ignore[attr-defined]


def test_a_cpu_without_amx_converts_and_says_what_serving_needs(
    tmp_path: Path, tiny_v4: Path
) -> None:
    host = build_host(tmp_path / "host", HostSpec(flags=HostSpec().flags.replace(" amx", " x")))
    request, notes = request_for(host, tiny_v4)
    assert request.numa_nodes == (0,)  # type: ignore[attr-defined]
    assert len(notes) == 1 and "has no AMX" in notes[0] and "only a CPU with AMX" in notes[0]


def test_a_cpu_without_avx512_is_refused_with_exit_15_naming_amx(
    tmp_path: Path, tiny_v4: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = build_host(tmp_path / "host", HostSpec(flags=AVX2_FLAGS))
    code = main(["convert", "--host-root", str(host), "--model", str(tiny_v4)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 15
    assert len(err) == 1 and "AMX" in err[0] and "AVX512F+AVX512BW" in err[0], err
    assert not Path(f"{tiny_v4}-AMXINT4").exists()


def test_without_kt_kernel_convert_refuses_in_one_line(
    four_nodes: Path, tiny_v4: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out"
    code = main(["convert", "--host-root", str(four_nodes), "--model", str(tiny_v4),
                 "--kt-threadpool-count", "2", "--output", str(output)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 23, err
    assert len(err) == 1 and "kt-kernel cannot be imported" in err[0], err
    assert not output.exists()


def test_a_broken_checkpoint_is_refused_before_kt_kernel_loads(
    four_nodes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{not json")
    code = main(["convert", "--host-root", str(four_nodes), "--model", str(model)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 17 and len(err) == 1 and "config.json is not valid JSON" in err[0], err
