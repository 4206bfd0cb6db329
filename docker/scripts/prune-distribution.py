"""Removes the files of one installed distribution that match a pattern, and says so in its RECORD.

Used while the image is built, in the step that installs the distribution: for prune rules
(builder/targets.yaml: kernels a target's GPUs can never load) and for module replacements
(builder/versions.yaml: transformers-kt's `transformers` module, replaced by transformers
4.57.1). PATTERN is a shell glob over the paths the RECORD lists, relative to site-packages
(`*` also matches `/`). The RECORD is rewritten to list exactly the files that stay, and folders
left empty are removed. A pattern that matches no file is an error: the data no longer
describes the distribution, and the image would silently keep what it meant to remove.

Usage: python prune-distribution.py DISTRIBUTION PATTERN   (with the environment's python)
"""

from __future__ import annotations

import csv
import fnmatch
import io
import sys
from importlib import metadata
from pathlib import Path


def prune(distribution: str, pattern: str) -> tuple[int, int]:
    """Remove the matching files; returns (files removed, bytes removed)."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise SystemExit(f"prune-distribution: {distribution} is not installed") from None
    record_files = [
        f for f in dist.files or [] if f.name == "RECORD" and f.parent.name.endswith(".dist-info")
    ]
    if not record_files:
        raise SystemExit(f"prune-distribution: {distribution} has no RECORD to tell its files")
    record_path = Path(str(dist.locate_file(record_files[0])))
    site = Path(str(dist.locate_file("")))
    rows = list(csv.reader(io.StringIO(record_path.read_text(encoding="utf-8"))))
    kept: list[list[str]] = []
    removed_files = 0
    removed_bytes = 0
    folders: set[Path] = set()
    for row in rows:
        if not row:
            continue
        if row[0] == str(record_path.relative_to(site)) or not fnmatch.fnmatchcase(row[0], pattern):
            kept.append(row)
            continue
        path = site / row[0]
        if path.is_file() or path.is_symlink():
            removed_bytes += path.lstat().st_size
            path.unlink()
            removed_files += 1
            folders.add(path.parent)
    if removed_files == 0:
        raise SystemExit(
            f"prune-distribution: no file of {distribution} {dist.version} matches {pattern!r}: "
            f"fix the rule in builder/targets.yaml (or module_replacements in versions.yaml)"
        )
    # Folders the removal emptied go too, deepest first, never above site-packages.
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        while folder != site and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(kept)
    record_path.write_text(out.getvalue(), encoding="utf-8")
    return removed_files, removed_bytes


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: prune-distribution.py DISTRIBUTION PATTERN")
    files, size = prune(sys.argv[1], sys.argv[2])
    print(
        f"prune-distribution: {sys.argv[1]}: removed {files} files ({size / 1e6:.1f} MB) "
        f"matching {sys.argv[2]!r}"
    )
