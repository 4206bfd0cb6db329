"""Removes the files one distribution installed under a top-level module, and says so in its RECORD.

Used at image build time for module_replacements in builder/versions.yaml: transformers-kt
installs the `transformers` module that transformers 4.57.1 replaces, plus an sgl_kernel
payload part that must stay. Only the module's files go; the RECORD is rewritten so that the
distribution's metadata lists exactly what is still installed.

Usage: python remove-module.py DISTRIBUTION MODULE
"""

from __future__ import annotations

import csv
import io
import shutil
import sys
from importlib import metadata
from pathlib import Path


def remove_module(distribution: str, module: str) -> int:
    dist = metadata.distribution(distribution)
    records = [
        f for f in dist.files or [] if f.name == "RECORD" and f.parent.name.endswith(".dist-info")
    ]
    if not records:
        raise SystemExit(f"{distribution} has no RECORD: cannot tell which files are its own")
    record_path = Path(str(dist.locate_file(records[0])))
    site = Path(str(dist.locate_file("")))
    removed = 0
    kept_rows: list[list[str]] = []
    record_text = dist.read_text("RECORD") or ""
    for row in csv.reader(io.StringIO(record_text)):
        if not row:
            continue
        top = row[0].split("/", 1)[0]
        if top == module:
            path = site / row[0]
            if path.exists():
                path.unlink()
                removed += 1
        else:
            kept_rows.append(row)
    # Remove what is left of the module folder (empty folders, __pycache__).
    module_dir = site / module
    if module_dir.is_dir():
        shutil.rmtree(module_dir)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(kept_rows)
    record_path.write_text(out.getvalue(), encoding="utf-8")
    return removed


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: remove-module.py DISTRIBUTION MODULE")
    count = remove_module(sys.argv[1], sys.argv[2])
    print(f"removed {count} files of module {sys.argv[2]!r} installed by {sys.argv[1]}")
