"""What the image leaves out: setuid programs, build-host detail, deprecated variables."""

from __future__ import annotations

import re
from typing import Any

import docker.models.images

from builder.engine import TOOLCHAIN_REASONS
from builder.matrix import load_versions

# payload_runtime loaded by path: sgl_kernel's __init__ needs the driver's libcuda.
CACHE_ROOT = (
    "import importlib.util as u; "
    "d = u.find_spec('sgl_kernel').submodule_search_locations[0]; "
    "s = u.spec_from_file_location('payload_runtime', d + '/payload_runtime.py'); "
    "p = u.module_from_spec(s); s.loader.exec_module(p); "
    "print(p._cache_root('0.7.2', '0123456789abcdef0123'))"
)


def test_no_program_in_the_image_is_setuid_or_setgid(run_in_image: Any) -> None:
    result = run_in_image(["find", "/", "-xdev", "-type", "f", "-perm", "/6000"], user="0")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == []


def test_the_toolchain_label_names_an_image_or_a_reason_without_host_detail(
    image: docker.models.images.Image,
) -> None:
    label = image.labels["io.kthybrid.cuda-toolchain-image"]
    if label.startswith("none"):
        assert label in {f"none ({reason})" for reason in TOOLCHAIN_REASONS}, label
    else:
        # An image reference (the pinned one, or a mirror passed with --cuda-toolchain-image).
        assert label == load_versions().cuda_toolchain_image_ref or " " not in label, label


# An address with a port, as an engine's resolver error names it ("on 127.0.0.11:53").
# Not a bare ":53": a build at 10:53 writes that into the created label's time.
ADDRESS = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}:\d+|\[[0-9a-fA-F:]+\]:\d+")


def test_no_label_carries_an_address_or_an_engine_error(image: docker.models.images.Image) -> None:
    for name, value in image.labels.items():
        for detail in ("dial tcp", "lookup ", "no such host", 'Get "http'):
            assert detail not in value, f"{name}={value!r}"
        assert not ADDRESS.search(value), f"{name}={value!r}"


def test_the_address_pattern_finds_a_resolver_error_and_not_a_time() -> None:
    assert ADDRESS.search("lookup registry on 127.0.0.11:53: no such host")
    assert ADDRESS.search("dial tcp [::1]:53: connect: refused")
    assert not ADDRESS.search("2026-12-04T10:53:20Z")


def test_no_sgl_prefixed_variable_is_set(image_env: dict[str, str]) -> None:
    # sglang 0.7.2 warns at every import for each SGL_* variable (deprecated for SGLANG_*).
    assert [name for name in image_env if name.startswith("SGL_")] == []


def test_importing_sglang_environ_warns_about_no_variable(run_in_image: Any) -> None:
    result = run_in_image(
        ["python", "-W", "always", "-c", "import sglang.srt.environ"], timeout=600
    )
    assert result.exit_code == 0, result.stderr[-2000:]
    assert "deprecated" not in result.stderr, result.stderr[-2000:]


def test_sgl_kernel_payloads_are_cached_under_the_cache_volume(run_in_image: Any) -> None:
    # sgl_kernel 0.7.2's own fallback: XDG_CACHE_HOME (/cache) once its site-packages
    # directory is not writable, as it is not for the image's user.
    result = run_in_image(["python", "-c", CACHE_ROOT])
    assert result.exit_code == 0, result.stderr[-2000:]
    assert result.stdout.strip().startswith("/cache/sgl-kernel-kt/0.7.2/"), result.stdout
