"""The image holds exactly the locked Python stack, with the pins the versions file asks for."""

from __future__ import annotations

import json
from typing import Any

import pytest

from builder.lock import REPLACEMENTS_LOCK, STACK_LOCK, normalise, read_lock
from builder.matrix import load_versions

LIST_DISTRIBUTIONS = (
    "import json, importlib.metadata as m; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


@pytest.fixture(scope="module")
def installed(run_in_image: Any) -> dict[str, str]:
    result = run_in_image(["python", "-c", LIST_DISTRIBUTIONS])
    assert result.exit_code == 0, result.stderr
    return {normalise(name): version for name, version in json.loads(result.stdout).items()}


def test_every_locked_package_is_installed_at_its_locked_version(
    installed: dict[str, str],
) -> None:
    locked = read_lock(STACK_LOCK) + read_lock(REPLACEMENTS_LOCK)
    wrong = {
        p.name: (p.version, installed.get(p.name))
        for p in locked
        if installed.get(p.name) != p.version
    }
    assert not wrong, f"locked vs installed: {wrong}"


def test_nothing_is_installed_that_the_lock_does_not_list(installed: dict[str, str]) -> None:
    locked = {p.name for p in read_lock(STACK_LOCK) + read_lock(REPLACEMENTS_LOCK)}
    # The environment is made without pip; the launcher is the image's own package.
    own = {"kthybrid-serve"}
    assert set(installed) - locked - own == set()


def test_flashinfer_python_and_cubin_versions_are_equal(installed: dict[str, str]) -> None:
    assert installed["flashinfer-python"] == installed["flashinfer-cubin"]


def test_flashinfer_is_at_least_0_6_9(installed: dict[str, str]) -> None:
    version = tuple(int(part) for part in installed["flashinfer-python"].split(".")[:3])
    assert version >= (0, 6, 9)


def test_every_pin_of_the_versions_file_holds(installed: dict[str, str]) -> None:
    for requirement in load_versions().requirements:
        assert installed[normalise(requirement.name)] == requirement.version, requirement.name


def test_torch_is_built_for_cuda_12_8(run_in_image: Any) -> None:
    result = run_in_image(["python", "-c", "import torch; print(torch.version.cuda)"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "12.8"


def test_transformers_module_is_4_57_1(run_in_image: Any) -> None:
    result = run_in_image(["python", "-c", "import transformers; print(transformers.__version__)"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "4.57.1"


def test_transformers_folder_holds_no_file_left_by_the_fork(run_in_image: Any) -> None:
    script = (
        "import importlib.metadata as m, pathlib, transformers, json; "
        "root = pathlib.Path(transformers.__file__).parent; "
        "owned = {str(f) for f in m.files('transformers')}; "
        "found = {p.relative_to(root.parent).as_posix() for p in root.rglob('*.py')}; "
        "print(json.dumps(sorted(found - owned)[:20] + [len(found)]))"
    )
    result = run_in_image(["python", "-c", script])
    assert result.exit_code == 0, result.stderr
    *strays, count = json.loads(result.stdout)
    assert strays == []
    assert count > 2000


def test_the_fork_keeps_its_sgl_kernel_payload_part(run_in_image: Any) -> None:
    script = (
        "import importlib.util, pathlib; "
        "spec = importlib.util.find_spec('transformers_kt_sgl_kernel_payload'); "
        "print((pathlib.Path(spec.origin).parent / 'payload.part').stat().st_size)"
    )
    result = run_in_image(["python", "-c", script])
    assert result.exit_code == 0, result.stderr
    assert int(result.stdout) > 1_000_000
