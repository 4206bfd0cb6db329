"""`make venv` installs the dev tools from a hash lock (dev.lock), like the image's stack."""

from __future__ import annotations

import re
from importlib import metadata

from packaging.markers import Marker
from packaging.requirements import Requirement

from builder.lock import DEV_LOCK, dev_requirements, normalise, split_entries
from builder.matrix import REPO_ROOT


def _entries() -> list[tuple[str, str]]:
    return split_entries(DEV_LOCK.read_text(encoding="utf-8"))


def _pin(entry: str) -> tuple[str, Marker | None]:
    first = entry.splitlines()[0].rstrip(" \\")
    requirement = Requirement(first)
    version = next(iter(requirement.specifier)).version
    return version, requirement.marker


def _applies(marker: Marker | None) -> bool:
    return marker is None or marker.evaluate()


def test_every_entry_of_the_dev_lock_carries_a_sha256_hash() -> None:
    entries = _entries()
    assert len(entries) > 30
    for name, text in entries:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", text), name


def test_the_dev_lock_pins_every_requirement_of_both_projects() -> None:
    pinned: dict[str, list[str]] = {}
    for name, text in _entries():
        version, marker = _pin(text)
        if _applies(marker):
            pinned.setdefault(name, []).append(version)
    for line in dev_requirements():
        requirement = Requirement(line)
        versions = pinned.get(normalise(requirement.name), [])
        assert versions, f"dev.lock lacks {line}: run `python -m builder lock --only dev`"
        assert all(requirement.specifier.contains(v, prereleases=True) for v in versions), (
            f"dev.lock pins {requirement.name}=={versions}, outside {line}: run `make lock`"
        )


def test_the_venv_holds_exactly_the_locked_versions() -> None:
    # This test runs from .venv, which `make venv` installed from dev.lock.
    for name, text in _entries():
        version, marker = _pin(text)
        if _applies(marker):
            assert metadata.version(name) == version, name


def test_make_venv_installs_with_require_hashes_and_fetches_nothing_else() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    installs = [line for line in recipe.splitlines() if "pip install" in line]
    assert installs, recipe
    for line in installs:
        assert "--require-hashes" in line or "--no-index" in line, line
    assert any("--require-hashes --no-deps -r dev.lock" in line for line in installs)
    assert "dev.lock" in recipe.splitlines()[0]


def test_a_package_the_image_also_has_is_the_images_version() -> None:
    # The launcher's clients (openai, httpx), plots (pillow) and metrics (prometheus-client)
    # are tested here against the versions they meet in the image.
    from builder.lock import REPLACEMENTS_LOCK, STACK_LOCK, read_lock

    image = {p.name: p.version for p in read_lock(STACK_LOCK) + read_lock(REPLACEMENTS_LOCK)}
    differ = {
        name: (_pin(entry)[0], image[name])
        for name, entry in _entries()
        if name in image and _pin(entry)[0] != image[name]
    }
    assert differ == {}
    assert {"openai", "httpx", "pillow", "prometheus-client"} <= {n for n, _ in _entries()}
