"""The Python stack's image layers: every locked package in exactly one, as the data says."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from builder.errors import MatrixError
from builder.layers import assign_layers, replacement_layer
from builder.lock import STACK_LOCK, split_entries
from builder.matrix import StackLayer, Versions, load_versions
from builder.render import LAYER_LOCK_DIR, render_layer_locks

LOCK = """\
alpha==1.0 \\
    --hash=sha256:aaaa
    # via -r versions.yaml.requirements
nvidia-one-cu12==2.0 \\
    --hash=sha256:bbbb
nvidia-two-cu12==3.0 \\
    --hash=sha256:cccc
torch==2.9.1 \\
    --hash=sha256:dddd
"""


def _with_layers(*layers: StackLayer) -> Versions:
    return dataclasses.replace(load_versions(), stack_layers=layers, module_replacements=())


def test_every_locked_package_is_in_exactly_one_layer() -> None:
    versions = load_versions()
    locks = assign_layers(STACK_LOCK.read_text(), versions)
    names = [name for lock in locks for name in lock.names]
    assert sorted(names) == sorted(name for name, _ in split_entries(STACK_LOCK.read_text()))
    assert len(names) == len(set(names))


def test_an_exact_name_wins_over_an_earlier_pattern() -> None:
    versions = _with_layers(
        StackLayer("cuda", ("nvidia-*",), "x"),
        StackLayer("one", ("nvidia-one-cu12",), "x"),
        StackLayer("rest", ("*",), "x", per_target=True),
    )
    locks = {lock.layer.name: lock.names for lock in assign_layers(LOCK, versions)}
    assert locks == {
        "cuda": ("nvidia-two-cu12",),
        "one": ("nvidia-one-cu12",),
        "rest": ("alpha", "torch"),
    }


def test_a_layer_naming_a_package_the_lock_lacks_is_refused() -> None:
    versions = _with_layers(
        StackLayer("gone", ("no-such-package",), "x"),
        StackLayer("rest", ("*",), "x", per_target=True),
    )
    with pytest.raises(MatrixError, match=r"'no-such-package', which docker/lock/stack\.lock"):
        assign_layers(LOCK, versions)


def test_a_layer_that_selects_nothing_is_refused() -> None:
    versions = _with_layers(
        StackLayer("rest", ("*",), "x"),
        StackLayer("empty", ("zzz-*",), "x", per_target=True),
    )
    with pytest.raises(MatrixError, match="'empty' selects no locked package"):
        assign_layers(LOCK, versions)


def test_a_package_no_layer_takes_is_refused() -> None:
    versions = _with_layers(StackLayer("torch", ("torch",), "x", per_target=True))
    with pytest.raises(MatrixError, match="'alpha' fits no stack layer"):
        assign_layers(LOCK, versions)


def test_the_module_replacement_runs_in_the_layer_that_installs_the_fork() -> None:
    versions = load_versions()
    locks = assign_layers(STACK_LOCK.read_text(), versions)
    layer = replacement_layer(locks, versions)
    holder = next(lock for lock in locks if lock.layer.name == layer)
    assert "transformers-kt" in holder.names


def test_layer_locks_are_the_stack_lock_split_without_a_change() -> None:
    entries = dict(split_entries(STACK_LOCK.read_text()))
    rendered: dict[str, str] = {}
    for item in render_layer_locks(load_versions()):
        assert item.path.parent == Path(item.root) / LAYER_LOCK_DIR
        for name, text in split_entries(item.text):
            assert name not in rendered
            rendered[name] = text
    assert rendered == entries
