"""The targets and versions data files: validated before anything renders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from builder.errors import MatrixError, UnknownTargetError
from builder.matrix import (
    TARGETS_FILE,
    VERSIONS_FILE,
    check_prune_rules,
    load_targets,
    load_versions,
    select_target,
)


def _write_targets(tmp_path: Path, mutate: object) -> Path:
    data = yaml.safe_load(TARGETS_FILE.read_text())
    assert callable(mutate)
    mutate(data)
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_targets_keep_the_data_files_order() -> None:
    data = yaml.safe_load(TARGETS_FILE.read_text())
    assert list(load_targets()) == list(data["targets"])


def test_target_names_match_their_compute_capability() -> None:
    for name, target in load_targets().items():
        assert name == "sm" + target.compute_capability.replace(".", "")


def test_missing_field_is_refused_with_its_path(tmp_path: Path) -> None:
    path = _write_targets(tmp_path, lambda d: d["targets"]["sm90"].pop("min_driver"))
    with pytest.raises(MatrixError, match=r"targets/sm90.*'min_driver' is a required property"):
        load_targets(path)


def test_malformed_arch_list_is_refused(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["targets"]["sm120"]["flashinfer_cuda_arch_list"] = "twelve"

    with pytest.raises(MatrixError, match="flashinfer_cuda_arch_list"):
        load_targets(_write_targets(tmp_path, mutate))


def test_name_that_contradicts_capability_is_refused(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["targets"]["sm91"] = d["targets"].pop("sm90")

    with pytest.raises(MatrixError, match="its name must be 'sm90'"):
        load_targets(_write_targets(tmp_path, mutate))


def test_unknown_target_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownTargetError, match=f"valid targets are {', '.join(load_targets())}"):
        select_target(load_targets(), "sm70")


def test_invalid_yaml_says_so(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text("targets: [unclosed\n")
    with pytest.raises(MatrixError, match="not valid YAML"):
        load_targets(path)


def test_every_pin_has_a_reason() -> None:
    versions = load_versions()
    assert all(r.why.strip() for r in versions.requirements)
    assert all(o.why.strip() and o.replaces.strip() for o in versions.overrides)


def test_flashinfer_python_and_cubin_are_pinned_together() -> None:
    versions = load_versions()
    assert versions.version_of("flashinfer-python") == versions.version_of("flashinfer-cubin")
    major, minor, patch = (int(p) for p in versions.version_of("flashinfer-python").split("."))
    assert (major, minor, patch) >= (0, 6, 9)


def test_the_asked_for_pins_hold() -> None:
    versions = load_versions()
    assert versions.cuda == "12.8"
    assert versions.version_of("transformers") == "4.57.1"
    assert versions.version_of("torch") == "2.9.1"
    assert versions.version_of("tilelang") == "0.1.8"
    assert versions.version_of("sglang-kt") == versions.version_of("kt-kernel")
    assert versions.version_of("ktransformers") == versions.version_of("kt-kernel")


def test_overrides_cover_every_pin_that_contradicts_sglang_kt() -> None:
    overridden = {o.name for o in load_versions().overrides}
    assert {"flashinfer-python", "flashinfer-cubin", "tilelang"} <= overridden


def test_targets_that_never_load_sgl_kernels_sm90_ops_leave_them_out() -> None:
    for target in load_targets().values():
        rules = {rule.name for rule in target.prune}
        assert ("sgl-kernel-sm90-ops" in rules) == (target.sgl_kernel_ops != "sm90"), target.name


def test_an_undefined_prune_rule_is_refused(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["targets"]["sm120"]["prune"] = ["no-such-rule"]

    with pytest.raises(MatrixError, match="prune rule\\(s\\) 'no-such-rule' that prune_rules"):
        load_targets(_write_targets(tmp_path, mutate))


def test_a_rule_on_a_distribution_outside_the_per_target_layer_is_refused(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["prune_rules"]["flashinfer-cubins-sm10x"]["distribution"] = "torch"

    targets = load_targets(_write_targets(tmp_path, mutate))
    with pytest.raises(MatrixError, match="removes files of torch, which the per-target layer"):
        check_prune_rules(targets, load_versions())


def test_the_per_target_layer_must_be_last_and_only_one(tmp_path: Path) -> None:
    data = yaml.safe_load(VERSIONS_FILE.read_text())
    data["stack_layers"][0]["per_target"] = True
    path = tmp_path / "versions.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MatrixError, match="exactly one layer with per_target: true"):
        load_versions(path)


def test_a_base_digest_must_be_a_sha256(tmp_path: Path) -> None:
    data = yaml.safe_load(VERSIONS_FILE.read_text())
    data["images"]["base_digest"] = "latest"
    path = tmp_path / "versions.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MatrixError, match="images/base_digest"):
        load_versions(path)


def test_a_recorded_digest_pins_from_by_digest() -> None:
    versions = dataclasses.replace(load_versions(), base_digest="sha256:" + "0" * 64)
    assert versions.base_image_ref == "debian:bookworm-slim@sha256:" + "0" * 64
