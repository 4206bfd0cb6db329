"""Checks that the installed distributions' RECORD files describe what is on disk.

Every path every RECORD lists must exist. For the distributions named on the command line
(those the build pruned or whose module it replaced), every listed file's hash and size must
match too, and every file under their top-level folders must be listed by some RECORD.
Prints one JSON object. Usage: python record_check.py DISTRIBUTION...
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path


def record_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def main() -> int:
    checked = {name.lower() for name in sys.argv[1:]}
    missing: list[str] = []
    wrong_hash: list[str] = []
    listed: set[Path] = set()
    tops: set[Path] = set()
    found: set[str] = set()
    distributions = list(metadata.distributions())
    for dist in distributions:
        name = dist.metadata["Name"].lower()
        for file in dist.files or []:
            path = Path(str(dist.locate_file(file))).resolve()
            listed.add(path)
            if not path.exists():
                missing.append(f"{name}: {file}")
                continue
            if name in checked:
                found.add(name)
                top = str(file).split("/", 1)[0]
                if not top.endswith(".dist-info") and top != "..":
                    tops.add(Path(str(dist.locate_file(top))).resolve())
                if file.hash is not None and (
                    file.hash.value != record_hash(path) or path.stat().st_size != file.size
                ):
                    wrong_hash.append(f"{name}: {file}")
    unlisted = sorted(
        str(path)
        for top in tops
        for path in (top.rglob("*") if top.is_dir() else [top])
        if path.is_file() and "__pycache__" not in path.parts and path.resolve() not in listed
    )
    report = {
        "distributions": len(distributions),
        "checked": sorted(found),
        "missing": missing[:20],
        "wrong_hash": wrong_hash[:20],
        "unlisted": unlisted[:20],
    }
    print(json.dumps(report))
    return 0 if not (missing or wrong_hash or unlisted) and found == checked else 1


if __name__ == "__main__":
    sys.exit(main())
