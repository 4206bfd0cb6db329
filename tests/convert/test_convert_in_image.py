"""`kthybrid-serve convert` in the image, with this checkout's launcher mounted over the image's.

Real kt-kernel (the variant this CPU calls for: an AVX-512 one without AMX on most CI machines;
on a CPU without AVX-512 only the refusal runs), real torch,
tiny checkpoints with real MXFP4 data. What an AMX CPU adds (its forward, the same bytes
written) is in docker/launcher/evidence/h200/convert-amxint4.json.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from kthybrid_serve.cli import main
from kthybrid_serve.convert.layout import LAYER_MARKER, MANIFEST, STAGING, Geometry

from tests.support.host_cpu import HOST_QUANTIZES, needs_quantizer
from tests.support.launcher_fixtures import HostSpec, build_host

pytestmark = pytest.mark.docker

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE.parents[1] / "docker" / "launcher" / "kthybrid_serve"
TEST_LABEL = {"io.kthybrid.test": "convert"}
TINY = Geometry(experts=16, hidden=256, intermediate=256, pools=1)
LAYERS = (0, 1, 2, 3)  # 3 MoE layers and the MTP layer


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def installed_launcher(docker_client: docker.DockerClient, image_name: str) -> str:
    """Where the image installed kthybrid_serve, so this checkout's copy can be mounted there."""
    code = "import kthybrid_serve, os; print(os.path.dirname(kthybrid_serve.__file__))"
    output = docker_client.containers.run(
        image_name, ["-c", code], entrypoint=["python"], remove=True, network_mode="none"
    )
    return str(output.decode().strip())


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """Writable by the image's user (not pytest's tmp_path: mode 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="kthybrid-convert-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def convert_in_image(
    docker_client: docker.DockerClient, image_name: str, installed_launcher: str, workdir: Path
) -> Any:
    def run(
        model: Path, output: str, *args: str, tmpfs: dict[str, str] | None = None,
        entrypoint: list[str] | None = None, command: list[str] | None = None,
    ) -> Run:  # fmt: skip
        volumes = {
            str(LAUNCHER): {"bind": installed_launcher, "mode": "ro"},
            str(model): {"bind": "/models/tiny", "mode": "ro"},
            str(workdir): {"bind": "/work", "mode": "rw"},
            str(HERE): {"bind": "/checks", "mode": "ro"},
            # tests.support (verify_amxint4.py's checkpoint code), importable through PYTHONPATH
            str(HERE.parent): {"bind": "/opt/kthybrid-tests/tests", "mode": "ro"},
        }
        container = docker_client.containers.run(
            image_name,
            command or ["convert", "--model", "/models/tiny", "--output", output, *args],
            entrypoint=entrypoint,
            volumes=volumes,
            environment={"PYTHONPATH": "/opt/kthybrid-tests"},
            tmpfs=tmpfs or {},
            labels=TEST_LABEL,
            detach=True,
            network_mode="none",
        )
        try:
            status = container.wait(timeout=600)
            return Run(
                int(status["StatusCode"]),
                container.logs(stdout=True, stderr=False).decode(errors="replace"),
                container.logs(stdout=False, stderr=True).decode(errors="replace"),
            )
        finally:
            container.remove(force=True, v=True)

    return run


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.kt"))
    }


@pytest.fixture(scope="module")
def converted(convert_in_image: Any, tiny_v4: Path, workdir: Path) -> tuple[Path, Run]:
    run = convert_in_image(tiny_v4, "/work/v4")
    assert run.exit_code == 0, run
    return workdir / "v4", run


@needs_quantizer
def test_convert_reports_its_plan_progress_and_how_to_serve(
    converted: tuple[Path, Run],
) -> None:
    _, run = converted
    assert "converting 4 of 4 MoE layers of /models/tiny to AMXINT4 in /work/v4: 1 pools" in (
        run.stdout
    )
    assert "4/4 layers 100%  mtp.0 converted in" in run.stdout
    assert "KTHYBRID_KT_METHOD=AMXINT4 KTHYBRID_KT_THREADPOOL_COUNT=1" in run.stdout


@needs_quantizer
def test_each_layer_holds_exactly_kt_kernels_files(converted: tuple[Path, Run]) -> None:
    output, _ = converted
    expected = dict(TINY.files())
    for layer in LAYERS:
        directory = output / f"_layer_{layer}"
        found = {
            str(p.relative_to(directory)): p.stat().st_size
            for p in directory.rglob("*")
            if p.is_file() and p.name != LAYER_MARKER
        }
        assert found == expected, layer
        marker = json.loads((directory / LAYER_MARKER).read_text())
        assert marker["layer"] == layer and marker["bytes"] == TINY.layer_bytes


@needs_quantizer
def test_the_output_holds_layers_and_a_manifest_and_nothing_half_done(
    converted: tuple[Path, Run],
) -> None:
    output, _ = converted
    assert sorted(p.name for p in output.iterdir()) == [f"_layer_{n}" for n in LAYERS] + [MANIFEST]
    manifest = json.loads((output / MANIFEST).read_text())
    assert manifest["method"] == "AMXINT4" and manifest["pools"] == 1
    assert manifest["layers"] == [0, 1, 2] and manifest["mtp_layers"] == [3]
    assert manifest["source_key_style"] == "v4"


@needs_quantizer
def test_hugging_face_key_names_convert_to_the_same_bytes(
    convert_in_image: Any, converted: tuple[Path, Run], tiny_hf: Path, workdir: Path
) -> None:
    run = convert_in_image(tiny_hf, "/work/hf")
    assert run.exit_code == 0, run
    assert digests(workdir / "hf") == digests(converted[0])


@needs_quantizer
def test_kt_kernels_forward_from_the_converted_files_matches_float64(
    convert_in_image: Any, converted: tuple[Path, Run], tiny_v4: Path
) -> None:
    run = convert_in_image(
        tiny_v4, "",
        entrypoint=["python"],
        command=["/checks/verify_amxint4.py", "/models/tiny", "/work/v4"],
    )  # fmt: skip
    report = json.loads([line for line in run.stdout.splitlines() if line.startswith("{")][-1])
    assert run.exit_code == 0 and report["ok"], report
    assert report["layers_checked"] == list(LAYERS)
    assert report["max_abs_err"] <= report["tolerance"]
    assert report["min_wrong_answer_err_over_tolerance"] > 1.0


@needs_quantizer
def test_a_rerun_converts_only_the_missing_and_the_half_done_layers(
    convert_in_image: Any, converted: tuple[Path, Run], tiny_v4: Path, workdir: Path
) -> None:
    original, _ = converted
    output = workdir / "resumed"
    shutil.copytree(original, output)
    shutil.rmtree(output / "_layer_1")  # never converted
    (output / STAGING).mkdir()
    (output / "_layer_2").rename(output / STAGING / "_layer_2")  # a run stopped inside it
    next((output / STAGING / "_layer_2").rglob("INT4_down_7_*")).unlink()
    for path in [output, *output.rglob("*")]:
        path.chmod(0o777)  # copied as root; the image's user converts in it
    run = convert_in_image(tiny_v4, "/work/resumed")
    assert run.exit_code == 0, run
    assert "converting 2 of 4 MoE layers" in run.stdout
    assert "layers.2: a previous run left it half-done; converting it again" in run.stdout
    assert digests(output) == digests(original)
    assert not (output / STAGING).exists()
    again = convert_in_image(tiny_v4, "/work/resumed")
    assert again.exit_code == 0 and "converting 0 of 4 MoE layers" in again.stdout


@needs_quantizer
def test_a_kt_kernel_without_the_int4_quantizer_is_refused_with_exit_15_naming_amx(
    convert_in_image: Any, tiny_v4: Path, workdir: Path
) -> None:
    run = convert_in_image(tiny_v4, "/work/avx2", "--kt-cpu-variant", "avx2")
    lines = run.stderr.strip().splitlines()
    assert run.exit_code == 15, run
    assert "AMX" in lines[-1] and "avx2 variant has no AMX-INT4 quantizer" in lines[-1], lines
    assert not (workdir / "avx2").exists()


@needs_quantizer
def test_too_little_disk_is_refused_with_exit_26_before_anything_is_written(
    convert_in_image: Any, tiny_v4: Path
) -> None:
    run = convert_in_image(
        tiny_v4, "",
        entrypoint=["sh", "-c"],
        command=["kthybrid-serve convert --model /models/tiny --output /small/out; "
                 "echo exit=$?; ls -A /small"],
        tmpfs={"/small": "size=4m,mode=1777"},
    )  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert "exit=26" in run.stdout, run
    assert run.stdout.strip().endswith("exit=26"), run  # and /small is empty
    assert len(lines) == 1 and "4 layers of AMX-INT4 experts need 70.2 MiB" in lines[0], lines
    assert "the file system has 4.0 MiB free" in lines[0], lines


@needs_quantizer
def test_two_pools_convert_here_and_the_launcher_serves_them_with_amxint4_on_two_nodes(
    convert_in_image: Any, tiny_v4: Path, workdir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    run = convert_in_image(tiny_v4, "/work/p2", "--kt-threadpool-count", "2")
    assert run.exit_code == 0, run
    assert "2 pools" in run.stdout  # on this one-node host the two pools share node 0
    assert sorted(p.name for p in (workdir / "p2" / "_layer_0").glob("_numa_*")) == [
        "_numa_0", "_numa_1"
    ]  # fmt: skip
    host = build_host(tmp_path / "host", HostSpec(sockets=1, nodes_per_socket=2))
    code = main(["plan", "--json", "--host-root", str(host), "--model", str(tiny_v4),
                 "--kt-weight-path", str(workdir / "p2"), "--kt-num-gpu-experts", "4",
                 "--gpu", "NVIDIA GeForce RTX 5090,32GiB,12.0"])  # fmt: skip
    plan = json.loads(capsys.readouterr().out)
    assert code == 0, plan
    assert (plan["kt_method"], plan["kt_threadpool_count"]) == ("AMXINT4", 2)


@pytest.mark.skipif(HOST_QUANTIZES, reason="this CPU has AVX-512: the conversions above run")
def test_on_a_cpu_without_avx512_the_image_refuses_with_exit_15_and_writes_nothing(
    convert_in_image: Any, tiny_v4: Path, workdir: Path
) -> None:
    run = convert_in_image(tiny_v4, "/work/refused")
    lines = run.stderr.strip().splitlines()
    assert run.exit_code == 15, run
    assert len(lines) == 1 and lines[0].startswith("kthybrid-serve: error: this CPU ("), lines
    assert "nor AVX512F+AVX512BW, which kt-kernel's AMX-INT4 quantizer needs" in lines[0]
    assert "--kt-method MXFP4" in lines[0]
    assert not (workdir / "refused").exists()
