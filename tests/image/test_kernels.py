"""The image holds the kernels its target loads and none that it never can (prune rules)."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest

from builder.matrix import Target, load_versions

CUBIN_RECORD_PREFIX = "flashinfer_cubin/cubins/"


@pytest.fixture(scope="module")
def cubins(run_script: Any) -> dict[str, Any]:
    result = run_script("flashinfer_cubins.py", timeout=600)
    assert result.exit_code == 0, result.stderr[-2000:]
    report: dict[str, Any] = result.json()
    return report


def _pruned(target: Target, distribution: str, record_path: str) -> bool:
    return any(
        fnmatch.fnmatchcase(record_path, pattern)
        for rule in target.prune
        if rule.distribution == distribution
        for pattern in rule.paths
    )


def test_flashinfer_uses_the_cubins_of_the_installed_flashinfer_cubin(
    cubins: dict[str, Any],
) -> None:
    assert cubins["flashinfer_uses_it"], cubins["cubin_dir"]


def test_flashinfer_finds_every_kernel_file_the_image_keeps(cubins: dict[str, Any]) -> None:
    # Through flashinfer's own loader with downloads off: each kept file is found and its
    # SHA-256 matches the checksum list (headers and kernel metadata stay on every target).
    assert cubins["resolved"], "flashinfer found none of its files"
    assert len(cubins["resolved"]) + len(cubins["absent"]) == cubins["listed"]


def test_every_file_the_image_lacks_was_removed_by_a_rule_of_this_target(
    cubins: dict[str, Any], target: Target
) -> None:
    unexplained = [
        name
        for name in cubins["absent"]
        if not _pruned(target, "flashinfer-cubin", CUBIN_RECORD_PREFIX + name)
    ]
    assert unexplained == []


def test_no_kept_file_is_one_a_rule_of_this_target_removes(
    cubins: dict[str, Any], target: Target
) -> None:
    kept = [
        n
        for n in cubins["resolved"]
        if _pruned(target, "flashinfer-cubin", CUBIN_RECORD_PREFIX + n)
    ]
    assert kept == []
    assert cubins["unlisted_cubins"] == []


def test_every_cubin_left_is_built_for_the_targets_compute_capability(
    cubins: dict[str, Any], target: Target
) -> None:
    capability = int(target.compute_capability.replace(".", ""))
    assert set(cubins["cubin_archs"]) <= {capability}, cubins["cubin_archs"]


def test_sgl_kernel_sm90_ops_are_there_only_for_a_target_that_loads_them(
    run_in_image: Any, target: Target
) -> None:
    script = (
        "import importlib.util, pathlib; "
        "spec = importlib.util.find_spec('sgl_kernel'); "
        "root = pathlib.Path(spec.submodule_search_locations[0]); "
        "print((root / 'sm90' / 'common_ops.abi3.so').is_file())"
    )
    result = run_in_image(["python", "-c", script])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(target.sgl_kernel_ops == "sm90")


def test_record_files_list_exactly_what_is_installed(run_script: Any, target: Target) -> None:
    # Every RECORD path exists; for the distributions the build pruned or replaced a module
    # of, every hash matches and every file in their folders is listed.
    touched = {rule.distribution for rule in target.prune} | {
        replacement.installed_by for replacement in load_versions().module_replacements
    }
    result = run_script("record_check.py", *sorted(touched), timeout=600)
    report = result.json()
    assert result.exit_code == 0, report
    assert set(report["checked"]) == touched
