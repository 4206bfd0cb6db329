"""Removes files of one installed distribution, and says so in its metadata.

Used while the image is built, in the step that installs the distribution:
  prune-distribution.py DISTRIBUTION PATTERN   prune rules (builder/targets.yaml): kernels a
      target's GPUs can never load. PATTERN is a shell glob over the paths its RECORD lists,
      relative to site-packages (`*` also matches `/`).
  prune-distribution.py --module DISTRIBUTION MODULE   module replacements (versions.yaml):
      the files under MODULE/, and the console scripts whose entry point lies in MODULE
      (another distribution installs its own; transformers-kt's `transformers` script would
      otherwise stay listed in its RECORD while transformers 4.57.1's replaces the file).
The RECORD is rewritten to list exactly the files that stay (entry_points.txt too, with its
new hash), and folders left empty are removed. Removing nothing is an error: the data no
longer describes the distribution, and the image would silently keep what it meant to remove.
Run it with the environment's own python.
"""

from __future__ import annotations

import base64
import configparser
import csv
import fnmatch
import hashlib
import io
import sys
from importlib import metadata
from pathlib import Path

SCRIPT_GROUPS = ("console_scripts", "gui_scripts")


def _record_row(path: Path, relative: str) -> list[str]:
    data = path.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [relative, f"sha256={digest}", str(len(data))]


def _scripts_into(dist: metadata.Distribution, module: str) -> set[str]:
    return {
        entry.name
        for entry in dist.entry_points
        if entry.group in SCRIPT_GROUPS
        and (entry.module == module or entry.module.startswith(module + "."))
    }


def _drop_entry_points(info: Path, names: set[str]) -> None:
    """Rewrite entry_points.txt without the scripts in `names`."""
    path = info / "entry_points.txt"
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"))
    for group in SCRIPT_GROUPS:
        if parser.has_section(group):
            for name in names:
                parser.remove_option(group, name)
            if not parser.options(group):
                parser.remove_section(group)
    out = io.StringIO()
    for section in parser.sections():
        out.write(f"[{section}]\n")
        for key, value in parser.items(section):
            out.write(f"{key} = {value}\n")
        out.write("\n")
    path.write_text(out.getvalue(), encoding="utf-8")


def prune(distribution: str, pattern: str, module: str | None = None) -> tuple[int, int]:
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
    info = record_path.parent
    site = Path(str(dist.locate_file("")))
    own_record = record_path.relative_to(site).as_posix()
    scripts = _scripts_into(dist, module) if module else set()
    rows = list(csv.reader(io.StringIO(record_path.read_text(encoding="utf-8"))))
    kept: list[list[str]] = []
    removed_files = 0
    removed_bytes = 0
    folders: set[Path] = set()
    for row in rows:
        if not row:
            continue
        path = site / row[0]
        is_script = path.parent.name == "bin" and path.name in scripts
        if row[0] == own_record or not (fnmatch.fnmatchcase(row[0], pattern) or is_script):
            kept.append(row)
            continue
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
    if scripts:
        _drop_entry_points(info, scripts)
        entry_points = (info / "entry_points.txt").relative_to(site).as_posix()
        kept = [
            _record_row(site / row[0], row[0]) if row[0] == entry_points else row for row in kept
        ]
    # Folders the removal emptied go too, deepest first, never above site-packages.
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        while folder != site and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(kept)
    record_path.write_text(out.getvalue(), encoding="utf-8")
    return removed_files, removed_bytes


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "--module":
        distribution, module = argv[1], argv[2]
        pattern = f"{module}/*"
    elif len(argv) == 2 and not argv[0].startswith("-"):
        distribution, pattern = argv
        module = None
    else:
        raise SystemExit(
            "usage: prune-distribution.py DISTRIBUTION PATTERN | --module DISTRIBUTION MODULE"
        )
    files, size = prune(distribution, pattern, module)
    print(
        f"prune-distribution: {distribution}: removed {files} files ({size / 1e6:.1f} MB) "
        f"matching {pattern!r}" + (" and the scripts into that module" if module else "")
    )


if __name__ == "__main__":
    main(sys.argv[1:])
