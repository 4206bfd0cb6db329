"""Splits the locked Python stack into the image's layers (versions.yaml `stack_layers`)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from builder.errors import MatrixError
from builder.lock import normalise, split_entries
from builder.matrix import StackLayer, Versions

GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class LayerLock:
    """One layer's share of the stack lock: entries in the lock's own text and order."""

    layer: StackLayer
    entries: tuple[tuple[str, str], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.entries)


def _is_pattern(package: str) -> bool:
    return any(character in GLOB_CHARACTERS for character in package)


def assign_layers(lock_text: str, versions: Versions) -> list[LayerLock]:
    """Each locked package in exactly one layer: the one naming it, else the first matching.

    Raises when a layer names a package the lock lacks, selects nothing, or when a package
    fits no layer: the data and the lock disagree, and the image would silently differ.
    """
    layers = versions.stack_layers
    entries = split_entries(lock_text)
    locked = {name for name, _ in entries}
    exact: dict[str, StackLayer] = {}
    for layer in layers:
        for package in layer.packages:
            if _is_pattern(package):
                continue
            name = normalise(package)
            if name not in locked:
                raise MatrixError(
                    f"stack layer {layer.name!r} names {package!r}, which docker/lock/stack.lock "
                    f"does not hold: fix builder/versions.yaml stack_layers or run `make lock`"
                )
            if name in exact:
                raise MatrixError(
                    f"{package!r} is named by stack layers {exact[name].name!r} and {layer.name!r}"
                )
            exact[name] = layer
    chosen: dict[str, list[tuple[str, str]]] = {layer.name: [] for layer in layers}
    for name, text in entries:
        layer_for = exact.get(name)
        if layer_for is None:
            layer_for = next(
                (
                    layer
                    for layer in layers
                    if any(
                        fnmatch.fnmatchcase(name, normalise(pattern))
                        for pattern in layer.packages
                        if _is_pattern(pattern)
                    )
                ),
                None,
            )
        if layer_for is None:
            raise MatrixError(
                f"locked package {name!r} fits no stack layer: name it in builder/versions.yaml "
                f"stack_layers (or keep a catch-all layer with the pattern '*')"
            )
        chosen[layer_for.name].append((name, text))
    result = []
    for layer in layers:
        if not chosen[layer.name]:
            raise MatrixError(
                f"stack layer {layer.name!r} selects no locked package: remove it from "
                f"builder/versions.yaml or fix its patterns"
            )
        result.append(LayerLock(layer, tuple(chosen[layer.name])))
    replaced = {normalise(m.installed_by) for m in versions.module_replacements}
    holders = {lock.layer.name for lock in result if replaced & set(lock.names)}
    if len(holders) > 1:
        raise MatrixError(
            f"the distributions whose modules are replaced sit in different stack layers "
            f"({', '.join(sorted(holders))}): keep them in one, where the replacement runs"
        )
    return result


def replacement_layer(layer_locks: list[LayerLock], versions: Versions) -> str | None:
    """The layer that installs the distributions module_replacements act on, if any."""
    replaced = {normalise(m.installed_by) for m in versions.module_replacements}
    for lock in layer_locks:
        if replaced & set(lock.names):
            return lock.layer.name
    return None
